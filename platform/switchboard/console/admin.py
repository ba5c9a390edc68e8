from __future__ import annotations

from django.contrib import admin

from switchboard.console.models import Membership


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["user", "role", "tenant", "language"]
    list_filter = ["role", "language"]
    search_fields = ["user__username", "tenant__name", "tenant__slug"]
    raw_id_fields = ["user"]
