from __future__ import annotations

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from switchboard.api import errors, views

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("bots", views.BotViewSet, basename="bot")
router.register("connectors", views.ConnectorViewSet, basename="connector")
router.register("conversations", views.ConversationViewSet, basename="conversation")
router.register("messages", views.MessageViewSet, basename="message")
router.register("keys", views.ApiKeyViewSet, basename="apikey")

app_name = "api"
urlpatterns = [
    path("v1/", include(router.urls)),
    path("v1/usage/", views.UsageView.as_view(), name="usage"),
    path("v1/mau/", views.MauView.as_view(), name="mau"),
    path("v1/licence/", views.LicenceView.as_view(), name="licence"),
    # The schema and its docs are public: they describe, they do not reveal.
    path(
        "schema/",
        SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]),
        name="schema",
    ),
    path(
        "docs/",
        SpectacularSwaggerView.as_view(
            url_name="api:schema", authentication_classes=[], permission_classes=[]
        ),
        name="docs",
    ),
    # Not `.*`: a path with a newline (%0A) is unknown too, not a Django HTML 404.
    re_path(r"^[\s\S]*$", errors.api_not_found),
]
