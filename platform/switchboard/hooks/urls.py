from __future__ import annotations

from django.urls import path

from switchboard.hooks import views

app_name = "hooks"

urlpatterns = [
    path("webhook/<str:connector_id>/", views.webhook_inbound, name="webhook"),
    path("dingtalk/<str:connector_id>/", views.dingtalk_inbound, name="dingtalk"),
    path("aligenie/<str:connector_id>/<str:token>/", views.aligenie_inbound, name="aligenie"),
]
