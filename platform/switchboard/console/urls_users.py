from __future__ import annotations

from django.urls import path

from switchboard.console import views_users

urlpatterns = [
    path("", views_users.end_users, name="users"),
]
