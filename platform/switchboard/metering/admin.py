"""Metering in the admin: the ledger and its rollups, read-only; alerts, acknowledgeable.

MauCounter, MonthlyActiveUser, ModelMauCounter and ModelActiveUser are not registered:
they have composite primary keys, which Django 5.2's admin refuses to register
(ImproperlyConfigured). The console shows MAU through `metering.selectors`.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone

from switchboard.metering.export import csv_lines, rollup_rows
from switchboard.metering.models import Alert, UsageRecord, UsageRollup


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Browse only: these rows are written by the platform and are evidence of use."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "created_at",
        "tenant",
        "bot_id",
        "outcome",
        "prompt_tokens",
        "completion_tokens",
        "ttft_ms",
        "latency_ms",
        "endpoint",
    ]
    list_filter = ["outcome", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["=message_id", "endpoint"]
    # The ledger grows without bound: no exact count of the whole table on every page.
    show_full_result_count = False
    # Ids, not the related rows: the ledger keeps ids of bots, connectors and end users
    # that may since have been deleted.
    fields = [
        "id",
        "created_at",
        "tenant",
        "bot_id",
        "connector_id",
        "end_user_id",
        "message_id",
        "endpoint",
        "model_name",
        "prompt_tokens",
        "completion_tokens",
        "ttft_ms",
        "latency_ms",
        "outcome",
    ]
    readonly_fields = fields


@admin.register(UsageRollup)
class UsageRollupAdmin(ReadOnlyAdmin):
    list_display = [
        "period",
        "bucket",
        "tenant",
        "bot_id",
        "requests",
        "ok",
        "failed",
        "prompt_tokens",
        "completion_tokens",
        "mean_ttft",
        "mean_latency",
    ]
    list_filter = ["period", "tenant"]
    list_select_related = ["tenant"]
    ordering = ["-bucket", "period"]
    show_full_result_count = False
    actions = ["export_csv"]
    fields = [
        "period",
        "bucket",
        "tenant",
        "bot_id",
        "requests",
        "ok",
        "failed",
        "prompt_tokens",
        "completion_tokens",
        "ttft_ms_sum",
        "ttft_count",
        "latency_ms_sum",
        "latency_count",
    ]
    readonly_fields = fields

    @admin.display(description="mean TTFT (ms)")
    def mean_ttft(self, obj: UsageRollup) -> str:
        return f"{obj.ttft_ms_sum / obj.ttft_count:.0f}" if obj.ttft_count else "–"

    @admin.display(description="mean latency (ms)")
    def mean_latency(self, obj: UsageRollup) -> str:
        return f"{obj.latency_ms_sum / obj.latency_count:.0f}" if obj.latency_count else "–"

    @admin.action(description="Export selected as CSV", permissions=["view"])
    def export_csv(
        self, request: HttpRequest, queryset: QuerySet[UsageRollup]
    ) -> StreamingHttpResponse:
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        response = StreamingHttpResponse(
            csv_lines(rollup_rows(queryset)), content_type="text/csv; charset=utf-8"
        )
        response["Content-Disposition"] = f'attachment; filename="usage-rollups-{stamp}.csv"'
        return response


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "created_at",
        "subject",
        "tenant",
        "model_name",
        "month",
        "threshold_percent",
        "value",
        "limit",
        "delivered_at",
        "acknowledged_at",
    ]
    list_filter = [
        "subject",
        "threshold_percent",
        ("acknowledged_at", admin.EmptyFieldListFilter),
        ("delivered_at", admin.EmptyFieldListFilter),
        "tenant",
    ]
    list_select_related = ["tenant"]
    search_fields = ["message", "model_name", "tenant__name", "tenant__slug"]
    date_hierarchy = "created_at"
    actions = ["acknowledge"]
    # Raised by the platform, once per threshold and month; editable only through the
    # Acknowledge action, which is why change permission is kept.
    readonly_fields = [
        "scope",
        "subject",
        "tenant",
        "model_name",
        "month",
        "threshold_percent",
        "value",
        "limit",
        "message",
        "created_at",
        "webhook_url",
        "delivered_at",
        "delivery_attempts",
        "delivery_error",
        "acknowledged_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A deleted alert would be raised again at the next crossing of its threshold.
        return False

    @admin.action(description="Acknowledge", permissions=["change"])
    def acknowledge(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        count = queryset.filter(acknowledged_at__isnull=True).update(acknowledged_at=timezone.now())
        self.message_user(request, f"{count} alert(s) acknowledged.")
