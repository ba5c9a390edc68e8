from __future__ import annotations

from django.urls import path

from switchboard.console import views_bots

urlpatterns = [
    path("", views_bots.bot_list, name="bot_list"),
    path("new/", views_bots.bot_create, name="bot_create"),
    path("preview/", views_bots.bot_preview, name="bot_preview"),
    path("<uuid:pk>/", views_bots.bot_detail, name="bot_detail"),
    path("<uuid:pk>/edit/", views_bots.bot_edit, name="bot_edit"),
    path("<uuid:pk>/active/", views_bots.bot_set_active, name="bot_set_active"),
    path(
        "<uuid:bot_pk>/connectors/new/<str:kind>/",
        views_bots.connector_create,
        name="connector_create",
    ),
    path(
        "<uuid:bot_pk>/connectors/<uuid:pk>/",
        views_bots.connector_detail,
        name="connector_detail",
    ),
    path(
        "<uuid:bot_pk>/connectors/<uuid:pk>/edit/",
        views_bots.connector_edit,
        name="connector_edit",
    ),
    path(
        "<uuid:bot_pk>/connectors/<uuid:pk>/rotate/",
        views_bots.connector_rotate,
        name="connector_rotate",
    ),
    path(
        "<uuid:bot_pk>/connectors/<uuid:pk>/enabled/",
        views_bots.connector_set_enabled,
        name="connector_set_enabled",
    ),
]
