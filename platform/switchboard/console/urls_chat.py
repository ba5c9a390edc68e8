from __future__ import annotations

from django.urls import path

from switchboard.console import views_chat

urlpatterns = [
    path("", views_chat.chat, name="chat"),
]
