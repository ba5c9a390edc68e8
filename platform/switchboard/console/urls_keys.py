from __future__ import annotations

from django.urls import path

from switchboard.console import views_keys

urlpatterns = [
    path("", views_keys.key_list, name="keys"),
    path("new/", views_keys.key_create, name="key_create"),
    path("<uuid:pk>/revoke/", views_keys.key_revoke, name="key_revoke"),
]
