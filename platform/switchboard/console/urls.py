from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import include, path

from switchboard.console import views

app_name = "console"

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password/", views.PasswordChangeView.as_view(), name="password_change"),
    path("password/done/", views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("language/", views.set_language, name="set_language"),
    path("tenant/", views.pick_tenant, name="pick_tenant"),
    # One module per area; each adds its own names under the "console" namespace.
    path("", include("switchboard.console.urls_overview")),
]
