from __future__ import annotations

from django.urls import path

from switchboard.console import views_conversations

urlpatterns = [
    path("", views_conversations.conversation_list, name="conversations"),
    path("<int:pk>/", views_conversations.conversation_detail, name="conversation"),
]
