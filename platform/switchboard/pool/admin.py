from __future__ import annotations

from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest

from switchboard.pool import services
from switchboard.pool.models import InferenceEndpoint


@admin.register(InferenceEndpoint)
class InferenceEndpointAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "name",
        "url",
        "model",
        "enabled",
        "draining",
        "weight",
        "max_concurrency",
        "healthy",
        "running",
        "waiting",
        "kv_cache_percent",
        "checked_at",
    ]
    list_filter = ["enabled", "draining", "healthy", "model"]
    search_fields = ["name", "url"]
    readonly_fields = [
        "healthy",
        "running",
        "waiting",
        "kv_cache_usage",
        "prefix_cache_hit_rate",
        "last_error",
        "checked_at",
        "created_at",
    ]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "name",
                    "url",
                    "model",
                    "enabled",
                    "draining",
                    "weight",
                    "max_concurrency",
                ]
            },
        ),
        ("Last health check", {"fields": readonly_fields}),
    ]
    actions = ["drain", "undrain", "check_health"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    @admin.display(description="KV cache")
    def kv_cache_percent(self, obj: InferenceEndpoint) -> str:
        return "" if obj.kv_cache_usage is None else f"{100 * obj.kv_cache_usage:.0f}%"

    @admin.action(description="Drain: finish in-flight requests, take no new ones")
    def drain(self, request: HttpRequest, queryset: QuerySet[InferenceEndpoint]) -> None:
        for endpoint in queryset:
            services.endpoint_set_draining(endpoint=endpoint, draining=True)
        self.message_user(request, f"{queryset.count()} endpoint(s) draining.")

    @admin.action(description="Stop draining: take new requests again")
    def undrain(self, request: HttpRequest, queryset: QuerySet[InferenceEndpoint]) -> None:
        for endpoint in queryset:
            services.endpoint_set_draining(endpoint=endpoint, draining=False)
        self.message_user(request, f"{queryset.count()} endpoint(s) taking requests.")

    @admin.action(description="Check health now")
    def check_health(self, request: HttpRequest, queryset: QuerySet[InferenceEndpoint]) -> None:
        results = services.pool_health_check()
        down = sorted(name for name, healthy in results.items() if not healthy)
        if down:
            self.message_user(request, f"unhealthy: {', '.join(down)}", messages.WARNING)
        else:
            self.message_user(request, f"all {len(results)} enabled endpoint(s) healthy.")
