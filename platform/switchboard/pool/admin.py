from __future__ import annotations

from django.contrib import admin
from django.db import models

from switchboard.pool.models import InferenceEndpoint


@admin.register(InferenceEndpoint)
class InferenceEndpointAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["name", "url", "model", "enabled", "created_at"]
    list_filter = ["enabled", "model"]
    search_fields = ["name", "url"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
