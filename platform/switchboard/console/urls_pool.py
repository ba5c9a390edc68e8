from __future__ import annotations

from django.urls import path

from switchboard.console import views_pool

urlpatterns = [
    path("", views_pool.pool, name="pool"),
    path("table/", views_pool.pool_table, name="pool_table"),
    path("add/", views_pool.endpoint_add, name="pool_add"),
    path("check/", views_pool.check_health, name="pool_check"),
    path(
        "<int:pk>/<slug:action>/",
        views_pool.endpoint_toggle,
        name="pool_toggle",
    ),
]
