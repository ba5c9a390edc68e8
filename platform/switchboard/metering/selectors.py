"""Metering's read layer, for the console and the API.

Every function takes the tenant it reads for (a Tenant or its id) and filters on it in
one place, and returns plain frozen dataclasses, never querysets: callers cannot widen
a query past its tenant, and templates and serializers see stable field names.

Usage comes from the rollups, so it trails the ledger by about a minute (beat's
interval plus `SWITCHBOARD_ROLLUP_LAG_S`). Ranges are half-open, [start, end), and match
rollup buckets by their start. Months are the first day of the month, UTC.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, Literal

from django.db.models import QuerySet, Sum
from django.utils import timezone

from switchboard.licensing.models import ModelLicence
from switchboard.metering.models import Alert, MauCounter, ModelMauCounter, UsageRollup
from switchboard.tenants.models import Tenant

Period = Literal["hour", "day"]
TenantRef = Tenant | uuid.UUID | str

DELETED_BOT = "deleted bot"
NO_BOT = "no bot"


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageFigures:
    requests: int
    ok: int
    # Every outcome but ok: failed after tokens were sent, pool busy, error.
    failed: int
    prompt_tokens: int
    completion_tokens: int
    # None when no call in the range measured it (failed before the first token).
    mean_ttft_ms: float | None
    mean_latency_ms: float | None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True, kw_only=True)
class UsagePoint(UsageFigures):
    bucket: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageTotals(UsageFigures):
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class BotUsage(UsageFigures):
    bot_id: uuid.UUID | None
    # The bot's name; NO_BOT for usage tied to no bot, DELETED_BOT once it is gone.
    bot_name: str
    bot_exists: bool


@dataclass(frozen=True, slots=True)
class MauFigure:
    month: date
    active: int
    over_limit: int
    refused: int


@dataclass(frozen=True, slots=True)
class ModelMauFigure:
    model_name: str
    # Empty for a model that was served but has no ModelLicence registered.
    licence_name: str
    month: date
    active: int
    mau_threshold: int | None
    # active as a percentage of the threshold; None without a threshold.
    percent_of_threshold: float | None


@dataclass(frozen=True, slots=True)
class AlertItem:
    id: int
    subject: str
    scope: str
    tenant_id: uuid.UUID | None
    model_name: str
    month: date
    threshold_percent: int
    value: int
    limit: int
    message: str
    created_at: datetime
    delivered_at: datetime | None
    delivery_error: str
    acknowledged_at: datetime | None


def tenant_id_of(tenant: TenantRef) -> uuid.UUID:
    """The id of a Tenant, or a tenant id as given (UUID or its text)."""
    if isinstance(tenant, Tenant):
        if tenant.pk is None:
            raise ValueError("an unsaved tenant has no usage")
        return tenant.pk
    return tenant if isinstance(tenant, uuid.UUID) else uuid.UUID(str(tenant))


def month_start(value: date | datetime | None = None) -> date:
    """The first day of `value`'s month (UTC for datetimes); this month by default."""
    if value is None:
        value = timezone.now()
    if isinstance(value, datetime):
        value = value.astimezone(UTC).date()
    return value.replace(day=1)


def _add_months(month: date, months: int) -> date:
    index = month.year * 12 + month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _check_range(start: datetime, end: datetime) -> None:
    if timezone.is_naive(start) or timezone.is_naive(end):
        raise ValueError("start and end must be timezone-aware")
    if end < start:
        raise ValueError("end must not be before start")


def _is_midnight(value: datetime) -> bool:
    return value.astimezone(UTC).timetz().replace(tzinfo=None) == time.min


# Sums over rollup rows, and the figures made from them: shared with the console's
# installation-wide views, which group the same rows differently.
ROLLUP_SUMS = {
    "s_requests": Sum("requests"),
    "s_ok": Sum("ok"),
    "s_failed": Sum("failed"),
    "s_prompt": Sum("prompt_tokens"),
    "s_completion": Sum("completion_tokens"),
    "s_ttft": Sum("ttft_ms_sum"),
    "s_ttft_n": Sum("ttft_count"),
    "s_latency": Sum("latency_ms_sum"),
    "s_latency_n": Sum("latency_count"),
}


def rollup_figures(row: Mapping[str, Any]) -> dict[str, Any]:
    def mean(total_key: str, count_key: str) -> float | None:
        count = row[count_key] or 0
        return (row[total_key] or 0.0) / count if count else None

    return {
        "requests": row["s_requests"] or 0,
        "ok": row["s_ok"] or 0,
        "failed": row["s_failed"] or 0,
        "prompt_tokens": row["s_prompt"] or 0,
        "completion_tokens": row["s_completion"] or 0,
        "mean_ttft_ms": mean("s_ttft", "s_ttft_n"),
        "mean_latency_ms": mean("s_latency", "s_latency_n"),
    }


def _rollups(
    tenant: TenantRef, *, period: Period, start: datetime, end: datetime
) -> QuerySet[UsageRollup]:
    _check_range(start, end)
    if period not in UsageRollup.Period.values:
        raise ValueError(f"period must be one of {UsageRollup.Period.values}, not {period!r}")
    return UsageRollup.objects.filter(
        tenant_id=tenant_id_of(tenant), period=period, bucket__gte=start, bucket__lt=end
    )


def _finest_period(start: datetime, end: datetime) -> Period:
    # Day rollups are 24 times fewer rows; they answer exactly when the range is whole days.
    return "day" if _is_midnight(start) and _is_midnight(end) else "hour"


def usage_series(
    tenant: TenantRef,
    *,
    period: Period,
    start: datetime,
    end: datetime,
    bot_id: uuid.UUID | str | None = None,
) -> list[UsagePoint]:
    """Usage per hour or day with a bucket starting in [start, end), oldest first; all
    the tenant's bots together, or one. Buckets without usage are left out."""
    rollups = _rollups(tenant, period=period, start=start, end=end)
    if bot_id is not None:
        rollups = rollups.filter(bot_id=bot_id)
    rows = rollups.values("bucket").annotate(**ROLLUP_SUMS).order_by("bucket")
    return [UsagePoint(bucket=row["bucket"], **rollup_figures(row)) for row in rows]


def usage_totals(tenant: TenantRef, *, start: datetime, end: datetime) -> UsageTotals:
    """The tenant's usage summed over [start, end), from whole hours (whole days when
    both ends are midnight UTC). Zeros when there was none."""
    rows = _rollups(tenant, period=_finest_period(start, end), start=start, end=end)
    return UsageTotals(start=start, end=end, **rollup_figures(rows.aggregate(**ROLLUP_SUMS)))


def usage_by_bot(tenant: TenantRef, *, start: datetime, end: datetime) -> list[BotUsage]:
    """The tenant's usage over [start, end) per bot, busiest first; bots since deleted
    are still listed, as DELETED_BOT."""
    tenant_id = tenant_id_of(tenant)
    rows = (
        _rollups(tenant_id, period=_finest_period(start, end), start=start, end=end)
        .values("bot_id", "bot__name", "bot__tenant_id")
        .annotate(**ROLLUP_SUMS)
        .order_by("-s_requests", "bot_id")
    )
    result = []
    for row in rows:
        # The join is on bot id alone; a bot of another tenant is not named, whatever
        # the ledger says.
        exists = row["bot__name"] is not None and row["bot__tenant_id"] == tenant_id
        name = NO_BOT if row["bot_id"] is None else (row["bot__name"] if exists else DELETED_BOT)
        result.append(
            BotUsage(bot_id=row["bot_id"], bot_name=name, bot_exists=exists, **rollup_figures(row))
        )
    return result


def _mau(month: date, counter: MauCounter | None) -> MauFigure:
    if counter is None:
        return MauFigure(month=month, active=0, over_limit=0, refused=0)
    return MauFigure(
        month=month, active=counter.active, over_limit=counter.over_limit, refused=counter.refused
    )


def mau_current(tenant: TenantRef, *, month: date | None = None) -> MauFigure:
    """The tenant's MAU for `month` (this month by default): one primary-key lookup."""
    month = month_start(month)
    counter = MauCounter.objects.filter(pk=(tenant_id_of(tenant), month)).first()
    return _mau(month, counter)


def mau_history(
    tenant: TenantRef, *, months: int = 12, until: date | None = None
) -> list[MauFigure]:
    """The tenant's MAU for the `months` months up to and including `until` (this month
    by default), oldest first, with zeros for months without a counter."""
    if months < 1:
        raise ValueError("months must be at least 1")
    last = month_start(until)
    first = _add_months(last, -(months - 1))
    counters = {
        counter.month: counter
        for counter in MauCounter.objects.filter(
            tenant_id=tenant_id_of(tenant), month__gte=first, month__lte=last
        )
    }
    return [_mau(m, counters.get(m)) for m in (_add_months(first, i) for i in range(months))]


def model_mau(*, month: date | None = None) -> list[ModelMauFigure]:
    """Installation-wide MAU of every model with registered licence terms, against its
    threshold, then any model served that month without registered terms."""
    month = month_start(month)
    active = dict(ModelMauCounter.objects.filter(month=month).values_list("model_name", "active"))
    result = []
    for licence in ModelLicence.objects.order_by("model_name"):
        count = active.pop(licence.model_name, 0)
        threshold = licence.mau_threshold
        result.append(
            ModelMauFigure(
                model_name=licence.model_name,
                licence_name=licence.licence_name,
                month=month,
                active=count,
                mau_threshold=threshold,
                percent_of_threshold=100.0 * count / threshold if threshold else None,
            )
        )
    # Served but unregistered: the operator should see these rather than miss them.
    for name in sorted(active):
        result.append(
            ModelMauFigure(
                model_name=name,
                licence_name="",
                month=month,
                active=active[name],
                mau_threshold=None,
                percent_of_threshold=None,
            )
        )
    return result


def _alert_items(alerts: Iterable[Alert]) -> list[AlertItem]:
    return [
        AlertItem(
            id=alert.pk,
            subject=alert.subject,
            scope=alert.scope,
            tenant_id=alert.tenant_id,
            model_name=alert.model_name,
            month=alert.month,
            threshold_percent=alert.threshold_percent,
            value=alert.value,
            limit=alert.limit,
            message=alert.message,
            created_at=alert.created_at,
            delivered_at=alert.delivered_at,
            delivery_error=alert.delivery_error,
            acknowledged_at=alert.acknowledged_at,
        )
        for alert in alerts
    ]


def alerts_for(tenant: TenantRef, *, unacknowledged_only: bool = False) -> list[AlertItem]:
    """The tenant's alerts, newest first."""
    alerts = Alert.objects.filter(tenant_id=tenant_id_of(tenant))
    if unacknowledged_only:
        alerts = alerts.filter(acknowledged_at__isnull=True)
    return _alert_items(alerts.order_by("-created_at", "-id"))


def operator_alerts(*, unacknowledged_only: bool = False) -> list[AlertItem]:
    """Installation-wide alerts (model licences), which belong to no tenant; newest first."""
    alerts = Alert.objects.filter(tenant__isnull=True)
    if unacknowledged_only:
        alerts = alerts.filter(acknowledged_at__isnull=True)
    return _alert_items(alerts.order_by("-created_at", "-id"))


@dataclass(frozen=True, slots=True)
class ActiveFigures:
    """Dashboard actives, estimated (Redis HyperLogLog, about 0.8 % standard error):
    not for billing, which reads the exact MAU."""

    day: date
    daily: int
    rolling_30_days: int


def actives(tenant: TenantRef, *, day: date | None = None) -> ActiveFigures:
    from switchboard.metering.admission import daily_actives, rolling_actives

    day = day or timezone.now().date()
    tenant_id = tenant_id_of(tenant)
    return ActiveFigures(
        day=day,
        daily=daily_actives(tenant_id, day),
        rolling_30_days=rolling_actives(tenant_id, day),
    )
