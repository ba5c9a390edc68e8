from __future__ import annotations

from django.urls import path

from switchboard.console import views_overview

urlpatterns = [
    path("", views_overview.overview, name="overview"),
]
