"""Overview: the first page after sign-in.

For one tenant (a tenant user's own, or the one an operator picked): usage over a date
range, MAU against the licence, time-to-first-token percentiles, busiest bots, recent
errors and open alerts. For an operator looking at every tenant: the installation's
totals, the busiest tenants and the model licences' MAU against their thresholds.

Usage comes from the daily rollups, so it trails the ledger by the rollup lag; latency
percentiles and errors come straight from the messages.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import redis
from django import forms
from django.core.exceptions import ValidationError
from django.db.models import Aggregate, Count, FloatField, Q, QuerySet, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from switchboard.console.access import Access, console_view
from switchboard.conversations.models import Message
from switchboard.licensing.services import effective_limits
from switchboard.metering import selectors
from switchboard.metering.models import Alert, MauCounter, UsageRollup

logger = logging.getLogger(__name__)

DEFAULT_DAYS = 14
PRESET_DAYS = (7, 14, 30, 90)
# A year of daily buckets is still one small chart; longer ranges belong in an export.
MAX_DAYS = 366
# Bounds that keep date arithmetic (the day after the last) far from date.min/max.
EARLIEST = date(2000, 1, 1)
RECENT_ERRORS = 10
BUSIEST = 10
OPEN_ALERTS = 20
# Usage bars turn amber here, and red at 100 %: the licence alerts' first threshold.
WARN_PERCENT = 80


# --- shared with the other usage pages --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Gauge:
    """A value against an optional limit, ready for a `.bar`."""

    value: int
    limit: int | None

    @property
    def percent(self) -> float | None:
        if not self.limit:
            return None
        return 100.0 * self.value / self.limit

    @property
    def width(self) -> float:
        # The bar never overflows its track, however far past the limit.
        percent = self.percent
        return 0.0 if percent is None else round(min(percent, 100.0), 1)

    @property
    def level(self) -> str:
        percent = self.percent
        if percent is None or percent < WARN_PERCENT:
            return ""
        return "bad" if percent >= 100 else "warn"


def chart_json(config: dict[str, Any]) -> str:
    """A Chart.js config for `<canvas data-chart="…">`; charts.js draws it. The template's
    autoescaping makes it safe inside the attribute."""
    return json.dumps(config, separators=(",", ":"), ensure_ascii=False)


# --- date range -------------------------------------------------------------------------


class DateRangeForm(forms.Form):
    """Whole days, both ends included, in UTC (the rollups' days)."""

    def __init__(self, *args: Any, today: date, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.today = today
        # "from" is a Python keyword, so the fields cannot be class attributes.
        self.fields["from"] = forms.DateField(
            label=gettext_lazy("From"),
            required=False,
            widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        )
        self.fields["to"] = forms.DateField(
            label=gettext_lazy("To"),
            required=False,
            widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        end = data.get("to") or self.today
        start = data.get("from") or end - timedelta(days=DEFAULT_DAYS - 1)
        if start < EARLIEST:
            raise ValidationError(
                _("Dates before %(date)s are not supported.") % {"date": EARLIEST.isoformat()}
            )
        if end > self.today + timedelta(days=MAX_DAYS):
            raise ValidationError(_("The end date is too far in the future."))
        if start > end:
            raise ValidationError(_("The start date must not be after the end date."))
        if (end - start).days + 1 > MAX_DAYS:
            raise ValidationError(_("Pick a range of at most %(days)d days.") % {"days": MAX_DAYS})
        data["start"], data["end"] = start, end
        return data


@dataclass(frozen=True, slots=True)
class DayRange:
    first: date
    last: date

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time.min, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        # Half-open, as the selectors take it: midnight after the last day.
        return datetime.combine(self.last + timedelta(days=1), time.min, tzinfo=UTC)

    @property
    def length(self) -> int:
        return (self.last - self.first).days + 1

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range(self.length)]


def _today() -> date:
    return timezone.now().astimezone(UTC).date()


def _last_days(days: int, today: date) -> DayRange:
    return DayRange(today - timedelta(days=days - 1), today)


def _day_range(request: HttpRequest) -> tuple[DateRangeForm, DayRange, bool]:
    """The form, the range to show, and whether the asked range was valid (a bad one
    falls back to the default, so the page still says something useful)."""
    today = _today()
    default = _last_days(DEFAULT_DAYS, today)
    if "from" in request.GET or "to" in request.GET:
        form = DateRangeForm(request.GET, today=today)
    else:
        form = DateRangeForm(
            {"from": default.first.isoformat(), "to": default.last.isoformat()}, today=today
        )
    if form.is_valid():
        return form, DayRange(form.cleaned_data["start"], form.cleaned_data["end"]), True
    return form, default, False


# --- figures ----------------------------------------------------------------------------


class PercentileCont(Aggregate):
    """PostgreSQL's continuous percentile (interpolated, like most dashboards')."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: str, fraction: float) -> None:
        fraction = float(fraction)
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be between 0 and 1")
        # A float formatted here, never request data, is what lands in the SQL.
        super().__init__(expression, fraction=repr(fraction))


@dataclass(frozen=True, slots=True)
class Latency:
    p50: float | None
    p95: float | None
    samples: int


def ttft_percentiles(access: Access, days: DayRange) -> Latency:
    """TTFT of the inbound messages answered in the range. Each inbound message carries
    its reply's timings, so counting inbound ones counts every answer once."""
    row = access.scope(
        Message.objects.filter(
            direction=Message.Direction.INBOUND,
            ttft_ms__isnull=False,
            created_at__gte=days.start,
            created_at__lt=days.end,
        )
    ).aggregate(
        p50=PercentileCont("ttft_ms", 0.5),
        p95=PercentileCont("ttft_ms", 0.95),
        samples=Count("pk"),
    )
    return Latency(p50=row["p50"], p95=row["p95"], samples=row["samples"])


def _installation_rollups(access: Access, days: DayRange) -> QuerySet[UsageRollup]:
    # The selectors read one tenant at a time; every tenant at once is one grouped query
    # over the same daily rollups (and still goes through the access scope).
    return access.scope(
        UsageRollup.objects.filter(
            period=UsageRollup.Period.DAY, bucket__gte=days.start, bucket__lt=days.end
        )
    )


def installation_totals(access: Access, days: DayRange) -> selectors.UsageTotals:
    row = _installation_rollups(access, days).aggregate(**selectors.ROLLUP_SUMS)
    return selectors.UsageTotals(start=days.start, end=days.end, **selectors.rollup_figures(row))


def installation_series(access: Access, days: DayRange) -> list[selectors.UsagePoint]:
    rows = (
        _installation_rollups(access, days)
        .values("bucket")
        .annotate(**selectors.ROLLUP_SUMS)
        .order_by("bucket")
    )
    return [
        selectors.UsagePoint(bucket=row["bucket"], **selectors.rollup_figures(row)) for row in rows
    ]


@dataclass(frozen=True, slots=True)
class TenantUsage:
    tenant_id: Any
    tenant_name: str
    requests: int
    failed: int
    total_tokens: int


def busiest_tenants(access: Access, days: DayRange) -> list[TenantUsage]:
    rows = (
        _installation_rollups(access, days)
        .values("tenant_id", "tenant__name")
        .annotate(**selectors.ROLLUP_SUMS)
        .order_by("-s_requests", "tenant__name")[:BUSIEST]
    )
    return [
        TenantUsage(
            tenant_id=row["tenant_id"],
            tenant_name=row["tenant__name"],
            requests=row["s_requests"] or 0,
            failed=row["s_failed"] or 0,
            total_tokens=(row["s_prompt"] or 0) + (row["s_completion"] or 0),
        )
        for row in rows
    ]


def usage_chart(series: list[selectors.UsagePoint], days: DayRange) -> str:
    """Messages (bars) and tokens (a line on its own axis) per day; days without usage
    are drawn as zero rather than skipped, so the axis is even."""
    by_day = {point.bucket.astimezone(UTC).date(): point for point in series}
    labels, messages, tokens = [], [], []
    for day in days.days:
        point = by_day.get(day)
        labels.append(day.isoformat())
        messages.append(point.requests if point else 0)
        tokens.append(point.total_tokens if point else 0)
    return chart_json(
        {
            "type": "bar",
            "data": {
                "labels": labels,
                "datasets": [
                    {"type": "bar", "label": _("Messages"), "data": messages, "yAxisID": "y"},
                    {
                        "type": "line",
                        "label": _("Tokens"),
                        "data": tokens,
                        "yAxisID": "tokens",
                        "tension": 0.25,
                        "pointRadius": 2,
                    },
                ],
            },
            "options": {
                "interaction": {"mode": "index", "intersect": False},
                "scales": {
                    "y": {
                        "beginAtZero": True,
                        "position": "left",
                        "title": {"display": True, "text": _("Messages")},
                    },
                    "tokens": {
                        "beginAtZero": True,
                        "position": "right",
                        "grid": {"drawOnChartArea": False},
                        "title": {"display": True, "text": _("Tokens")},
                    },
                },
            },
        }
    )


def recent_errors(access: Access, days: DayRange) -> list[Message]:
    """The newest failed inbound messages and undeliverable replies in the range."""
    failed = Q(direction=Message.Direction.INBOUND, status=Message.Status.FAILED) | Q(
        direction=Message.Direction.OUTBOUND, status=Message.Status.UNDELIVERABLE
    )
    return list(
        access.scope(Message.objects.filter(failed))
        .filter(created_at__gte=days.start, created_at__lt=days.end)
        .select_related("tenant", "connector", "conversation__bot")
        .order_by("-created_at")[:RECENT_ERRORS]
    )


def _actives(tenant: Any) -> selectors.ActiveFigures | None:
    # Estimates from Redis: a dashboard without them beats no dashboard while Redis is away.
    try:
        return selectors.actives(tenant)
    except redis.RedisError:
        logger.warning("overview: active-user estimates unavailable", exc_info=True)
        return None


def installation_mau(access: Access, month: date) -> int:
    # End users belong to one tenant, so the installation's MAU is the tenants' sum.
    row = access.scope(MauCounter.objects.filter(month=month)).aggregate(active=Sum("active"))
    return row["active"] or 0


def _with_shares(rows: list[Any]) -> list[tuple[Any, float]]:
    """Each row with its bar width: its requests relative to the busiest row's (a
    comparison, not a limit, so these bars never turn amber or red)."""
    top = max((row.requests for row in rows), default=0)
    return [(row, round(100.0 * row.requests / top, 1) if top else 0.0) for row in rows]


# --- the page ---------------------------------------------------------------------------


@console_view()
def overview(request: HttpRequest) -> HttpResponse:
    access: Access = request.access  # type: ignore[attr-defined]
    form, days, valid = _day_range(request)
    month = selectors.month_start()
    context: dict[str, Any] = {
        "form": form,
        "days": days,
        "range_valid": valid,
        "default_days": DEFAULT_DAYS,
        "presets": [_last_days(n, _today()) for n in PRESET_DAYS],
        "month": month,
        "latency": ttft_percentiles(access, days),
        "errors": recent_errors(access, days),
    }
    tenant = access.tenant
    if tenant is None:
        context.update(
            totals=installation_totals(access, days),
            chart=usage_chart(installation_series(access, days), days),
            busiest_tenants=_with_shares(busiest_tenants(access, days)),
            mau=Gauge(installation_mau(access, month), None),
            models=[
                (figure, Gauge(figure.active, figure.mau_threshold))
                for figure in selectors.model_mau(month=month)
            ],
            alerts=list(
                access.scope(Alert.objects.filter(acknowledged_at__isnull=True))
                .select_related("tenant")
                .order_by("-created_at", "-id")[:OPEN_ALERTS]
            ),
        )
    else:
        limits = effective_limits(tenant)
        busiest = selectors.usage_by_bot(tenant, start=days.start, end=days.end)[:BUSIEST]
        context.update(
            totals=selectors.usage_totals(tenant, start=days.start, end=days.end),
            chart=usage_chart(
                selectors.usage_series(tenant, period="day", start=days.start, end=days.end),
                days,
            ),
            busiest_bots=_with_shares(busiest),
            mau=Gauge(selectors.mau_current(tenant, month=month).active, limits.mau_limit),
            limits=limits,
            actives=_actives(tenant),
            alerts=selectors.alerts_for(tenant, unacknowledged_only=True)[:OPEN_ALERTS],
        )
    return render(request, "console/overview.html", context, status=200 if valid else 400)
