from __future__ import annotations

from django.urls import path

from switchboard.console import views_deliveries

urlpatterns = [
    path("", views_deliveries.delivery_list, name="deliveries"),
    path("<uuid:pk>/", views_deliveries.delivery_detail, name="delivery_detail"),
    path("<uuid:pk>/replay/", views_deliveries.delivery_replay, name="delivery_replay"),
]
