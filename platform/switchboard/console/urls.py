from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import include, path

from switchboard.console import urls_tenants, views
from switchboard.console.access import console_view

app_name = "console"

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Behind console_view: changing the password needs the second factor too, if any.
    path(
        "password/",
        console_view()(views.PasswordChangeView.as_view()),
        name="password_change",
    ),
    path(
        "password/done/",
        console_view()(views.PasswordChangeDoneView.as_view()),
        name="password_change_done",
    ),
    path("language/", views.set_language, name="set_language"),
    path("tenant/", views.pick_tenant, name="pick_tenant"),
    path("otp/", include("switchboard.console.urls_otp")),
    # One module per area; each adds its own names under the "console" namespace.
    path("", include("switchboard.console.urls_overview")),
    path("tenants/", include("switchboard.console.urls_tenants")),
    path("licences/", include(urls_tenants.licence_urlpatterns)),
    path("bots/", include("switchboard.console.urls_bots")),
    path("chat/", include("switchboard.console.urls_chat")),
    path("conversations/", include("switchboard.console.urls_conversations")),
    path("users/", include("switchboard.console.urls_users")),
    path("pool/", include("switchboard.console.urls_pool")),
    path("deliveries/", include("switchboard.console.urls_deliveries")),
    path("keys/", include("switchboard.console.urls_keys")),
    path("audit/", include("switchboard.console.urls_audit")),
]
