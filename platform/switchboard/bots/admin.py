from __future__ import annotations

from django.contrib import admin
from django.db import models

from switchboard.bots.models import Bot, Connector


class ConnectorInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Connector
    extra = 0
    fields = ["name", "kind", "callback_url", "enabled", "last_error"]
    readonly_fields = ["last_error"]
    show_change_link = True
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}


@admin.register(Bot)
class BotAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["name", "tenant", "model_name", "temperature", "max_tokens", "is_active"]
    list_filter = ["is_active", "model_name", "tenant"]
    search_fields = ["name", "tenant__name"]
    inlines = [ConnectorInline]


@admin.register(Connector)
class ConnectorAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["name", "kind", "bot", "tenant", "enabled", "last_error_at"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "bot__name", "tenant__name"]
    readonly_fields = ["id", "last_error", "last_error_at", "created_at"]
    # The secret is write-only here: the admin never renders it back into a page.
    exclude = ["secret"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
