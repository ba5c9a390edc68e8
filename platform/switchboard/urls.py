from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from switchboard.core import views as core_views
from switchboard.hooks import views as hooks_views
from switchboard.observability import views as observability_views

urlpatterns = [
    path("", core_views.home, name="home"),
    path("healthz", core_views.healthz, name="healthz"),
    path("readyz", core_views.readyz, name="readyz"),
    # Prometheus; protected (README "Observability").
    path("metrics", observability_views.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("console/", include("switchboard.console.urls")),
    path("hooks/", include("switchboard.hooks.urls")),
    path("api/", include("switchboard.api.urls")),
    path("aligenie/<str:name>.txt", hooks_views.aligenie_ownership_file, name="aligenie-ownership"),
]
