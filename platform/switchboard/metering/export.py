"""Usage as CSV: the rollups per hour or day and bot, or the ledger's own rows.

Rows are produced lazily (the ledger is read with `.iterator()`), so an export of
millions of records streams in constant memory whether it goes to a file, stdout or a
streaming HTTP response.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from django.db.models import QuerySet
from django.utils import timezone

from switchboard.metering.models import UsageRecord, UsageRollup
from switchboard.metering.selectors import DELETED_BOT, NO_BOT, TenantRef, tenant_id_of

ExportPeriod = Literal["hour", "day", "records"]

ROLLUP_HEADER = [
    "period",
    "bucket_start_utc",
    "bot_id",
    "bot_name",
    "requests",
    "ok",
    "failed",
    "prompt_tokens",
    "completion_tokens",
    "mean_ttft_ms",
    "mean_latency_ms",
]
RECORD_HEADER = [
    "id",
    "created_at_utc",
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

# Spreadsheets run a cell starting with one of these as a formula; names typed by
# tenants (bots) and endpoint names are quoted so they stay text (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

_CHUNK = 2000


class _Writable(Protocol):
    def write(self, text: str, /) -> Any: ...


def _text(value: str) -> str:
    return f"'{value}" if value.startswith(_FORMULA_START) else value


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _optional(value: Any) -> str:
    return "" if value is None else str(value)


def _mean(total: float, count: int) -> str:
    return _number(total / count) if count else ""


def rollup_rows(rollups: QuerySet[UsageRollup]) -> Iterator[list[str]]:
    """The given rollups as CSV rows, header first (also the admin's export action)."""
    yield ROLLUP_HEADER
    rows = rollups.values_list(
        "period",
        "bucket",
        "tenant_id",
        "bot_id",
        "bot__tenant_id",
        "bot__name",
        "requests",
        "ok",
        "failed",
        "prompt_tokens",
        "completion_tokens",
        "ttft_ms_sum",
        "ttft_count",
        "latency_ms_sum",
        "latency_count",
    ).order_by("bucket", "period", "tenant_id", "bot_id")
    for (
        period,
        bucket,
        tenant_id,
        bot_id,
        bot_tenant_id,
        bot_name,
        requests,
        ok,
        failed,
        prompt,
        completion,
        ttft_sum,
        ttft_n,
        latency_sum,
        latency_n,
    ) in rows.iterator(chunk_size=_CHUNK):
        if bot_id is None:
            name = NO_BOT
        elif bot_name is None or bot_tenant_id != tenant_id:
            # Joined on the bot id alone: another tenant's bot is never named.
            name = DELETED_BOT
        else:
            name = _text(bot_name)
        yield [
            period,
            _when(bucket),
            _optional(bot_id),
            name,
            str(requests),
            str(ok),
            str(failed),
            str(prompt),
            str(completion),
            _mean(ttft_sum, ttft_n),
            _mean(latency_sum, latency_n),
        ]


def _record_rows(records: QuerySet[UsageRecord]) -> Iterator[list[str]]:
    yield RECORD_HEADER
    rows = records.values_list(
        "id",
        "created_at",
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
    ).order_by("created_at", "id")
    for (
        pk,
        created_at,
        bot_id,
        connector_id,
        end_user_id,
        message_id,
        endpoint,
        model_name,
        prompt,
        completion,
        ttft,
        latency,
        outcome,
    ) in rows.iterator(chunk_size=_CHUNK):
        yield [
            str(pk),
            _when(created_at),
            _optional(bot_id),
            _optional(connector_id),
            _optional(end_user_id),
            _optional(message_id),
            _text(endpoint),
            _text(model_name),
            str(prompt),
            str(completion),
            _number(ttft),
            _number(latency),
            outcome,
        ]


def usage_csv_rows(
    tenant: TenantRef, *, period: ExportPeriod, start: datetime, end: datetime
) -> Iterator[list[str]]:
    """The tenant's usage in [start, end) as CSV rows, header first.

    "hour" and "day": one row per rollup bucket and bot (by bucket start); "records":
    one row per ledger row (by created_at), including rows the rollups have not
    reached yet. Times are UTC, ISO 8601; means are in ms, empty when nothing measured.
    """
    if timezone.is_naive(start) or timezone.is_naive(end):
        raise ValueError("start and end must be timezone-aware")
    tenant_id = tenant_id_of(tenant)
    if period == "records":
        return _record_rows(
            UsageRecord.objects.filter(
                tenant_id=tenant_id, created_at__gte=start, created_at__lt=end
            )
        )
    if period not in UsageRollup.Period.values:
        raise ValueError(f"period must be hour, day or records, not {period!r}")
    return rollup_rows(
        UsageRollup.objects.filter(
            tenant_id=tenant_id, period=period, bucket__gte=start, bucket__lt=end
        )
    )


def write_csv(rows: Iterable[list[str]], out: _Writable) -> int:
    """Write rows to a text stream (open files with newline=""); returns data rows."""
    writer = csv.writer(out)
    count = -1
    for row in rows:
        writer.writerow(row)
        count += 1
    return max(count, 0)


class Echo:
    """A file-like object whose write returns the line, for StreamingHttpResponse."""

    def write(self, text: str) -> str:
        return text


def csv_lines(rows: Iterable[list[str]]) -> Iterator[str]:
    """The rows as CSV text, line by line (for a StreamingHttpResponse)."""
    writer = csv.writer(Echo())
    for row in rows:
        yield writer.writerow(row)
