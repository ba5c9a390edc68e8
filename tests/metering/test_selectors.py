"""The metering read layer: what the console and API show is what the rollups and
counters say, for the tenant asked about and no other."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

import pytest

from switchboard.metering import selectors
from switchboard.metering.models import Alert, MauCounter, ModelMauCounter, UsageRollup
from switchboard.metering.rollups import rollups_update
from tests.metering.test_rollups import T0, make_record

pytestmark = pytest.mark.django_db

H = timedelta(hours=1)
DAY = timedelta(days=1)


@pytest.fixture
def other_tenant(db: None) -> Any:
    from switchboard.tenants.models import Tenant

    return Tenant.objects.create(name="Other", slug=f"other-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def usage(tenant: Any, bot: Any, other_tenant: Any) -> dict[str, Any]:
    """Two days of usage for `tenant` over two bots (one deleted afterwards) and none,
    and a busier other tenant that must never show."""
    from switchboard.bots.services import bot_create

    doomed = bot_create(tenant=tenant, name="Doomed", system_prompt="x")
    make_record(tenant.pk, at=T0 + 1 * H, bot_id=bot.pk, ttft_ms=100, latency_ms=1000)
    make_record(tenant.pk, at=T0 + 1 * H + timedelta(minutes=59), bot_id=bot.pk, ttft_ms=300)
    make_record(tenant.pk, at=T0 + 3 * H, bot_id=doomed.pk, outcome="busy", ttft_ms=None)
    make_record(tenant.pk, at=T0 + 26 * H, outcome="error", ttft_ms=None, latency_ms=None)
    make_record(tenant.pk, at=T0 + 27 * H, bot_id=bot.pk, prompt_tokens=1, completion_tokens=2)
    other_bot = bot_create(tenant=other_tenant, name="Theirs", system_prompt="x")
    for i in range(10):
        make_record(other_tenant.pk, at=T0 + i * H, bot_id=other_bot.pk, prompt_tokens=1000)
    # Bad data: this tenant's ledger naming the other tenant's bot. Counted, never named.
    make_record(tenant.pk, at=T0 + 4 * H, bot_id=other_bot.pk)
    assert rollups_update(now=T0 + 3 * DAY) == 16
    doomed_id = doomed.pk
    doomed.delete()
    return {"doomed_id": doomed_id, "other_bot": other_bot}


def test_hourly_series_omits_empty_buckets_and_sums_bots(tenant: Any, bot: Any, usage: Any) -> None:
    series = selectors.usage_series(tenant, period="hour", start=T0, end=T0 + 2 * DAY)
    assert [p.bucket for p in series] == [T0 + h * H for h in (1, 3, 4, 26, 27)]
    first = series[0]
    assert (first.requests, first.ok, first.failed) == (2, 2, 0)
    assert (first.prompt_tokens, first.completion_tokens, first.total_tokens) == (20, 40, 60)
    assert first.mean_ttft_ms == pytest.approx(200.0)
    assert first.mean_latency_ms == pytest.approx(750.0)
    # Failed before the first token: nothing measured, no mean.
    assert series[1].failed == 1 and series[1].mean_ttft_ms is None
    assert series[3].mean_latency_ms is None

    # Half-open: the bucket starting at `end` is out, the one starting at `start` in.
    assert [
        p.bucket
        for p in selectors.usage_series(tenant, period="hour", start=T0 + 3 * H, end=T0 + 26 * H)
    ] == [T0 + 3 * H, T0 + 4 * H]

    only_bot = selectors.usage_series(
        tenant, period="hour", start=T0, end=T0 + 2 * DAY, bot_id=bot.pk
    )
    assert [(p.bucket, p.requests) for p in only_bot] == [(T0 + H, 2), (T0 + 27 * H, 1)]


def test_daily_series_matches_the_rollups(tenant: Any, usage: Any) -> None:
    series = selectors.usage_series(tenant, period="day", start=T0, end=T0 + 7 * DAY)
    assert [(p.bucket, p.requests, p.ok, p.failed) for p in series] == [
        (T0, 4, 3, 1),
        (T0 + DAY, 2, 1, 1),
    ]
    for point in series:
        rows = UsageRollup.objects.filter(tenant=tenant, period="day", bucket=point.bucket)
        assert point.prompt_tokens == sum(r.prompt_tokens for r in rows)
        assert point.completion_tokens == sum(r.completion_tokens for r in rows)


def test_totals_from_days_or_hours(tenant: Any, usage: Any) -> None:
    whole = selectors.usage_totals(tenant, start=T0, end=T0 + 2 * DAY)
    assert (whole.requests, whole.ok, whole.failed) == (6, 4, 2)
    assert whole.prompt_tokens == 10 * 5 + 1
    assert whole.completion_tokens == 20 * 5 + 2
    assert whole.mean_ttft_ms == pytest.approx((100 + 300 + 50 + 50) / 4)
    assert whole.mean_latency_ms == pytest.approx((1000 + 500 * 4) / 5)
    assert (whole.start, whole.end) == (T0, T0 + 2 * DAY)

    # Not on midnight: answered from the hours, still half-open.
    part = selectors.usage_totals(tenant, start=T0 + 2 * H, end=T0 + 26 * H)
    assert (part.requests, part.failed) == (2, 1)


def test_by_bot_names_bots_and_says_when_one_is_gone(tenant: Any, bot: Any, usage: Any) -> None:
    rows = selectors.usage_by_bot(tenant, start=T0, end=T0 + 2 * DAY)
    by_id = {row.bot_id: row for row in rows}
    assert rows[0].bot_id == bot.pk and rows[0].requests == 3  # busiest first
    assert by_id[bot.pk].bot_name == "Helper" and by_id[bot.pk].bot_exists
    gone = by_id[usage["doomed_id"]]
    assert (gone.bot_name, gone.bot_exists, gone.failed) == (selectors.DELETED_BOT, False, 1)
    assert by_id[None].bot_name == selectors.NO_BOT
    foreign = by_id[usage["other_bot"].pk]
    assert foreign.bot_name == selectors.DELETED_BOT and foreign.requests == 1
    assert sum(row.requests for row in rows) == 6


def test_a_tenant_without_usage_gets_zeros(other_tenant: Any, tenant: Any) -> None:
    assert selectors.usage_series(tenant, period="day", start=T0, end=T0 + DAY) == []
    totals = selectors.usage_totals(tenant.pk, start=T0, end=T0 + DAY)
    assert (totals.requests, totals.prompt_tokens, totals.mean_ttft_ms) == (0, 0, None)
    assert selectors.usage_by_bot(str(tenant.pk), start=T0, end=T0 + DAY) == []
    assert selectors.mau_current(tenant) == selectors.MauFigure(
        month=selectors.month_start(), active=0, over_limit=0, refused=0
    )
    assert selectors.alerts_for(tenant) == []


def test_other_tenants_usage_never_appears(other_tenant: Any, usage: Any) -> None:
    totals = selectors.usage_totals(other_tenant, start=T0, end=T0 + 2 * DAY)
    assert (totals.requests, totals.prompt_tokens) == (10, 10_000)
    bots = selectors.usage_by_bot(other_tenant, start=T0, end=T0 + 2 * DAY)
    assert [(b.bot_name, b.requests) for b in bots] == [("Theirs", 10)]


def test_arguments_are_checked(tenant: Any) -> None:
    naive = T0.replace(tzinfo=None)
    with pytest.raises(ValueError, match="aware"):
        selectors.usage_totals(tenant, start=naive, end=naive + DAY)
    with pytest.raises(ValueError, match="period"):
        selectors.usage_series(tenant, period="week", start=T0, end=T0 + DAY)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        selectors.usage_totals(tenant, start=T0 + DAY, end=T0)


def test_mau_current_and_history(tenant: Any, other_tenant: Any) -> None:
    MauCounter.objects.create(
        tenant=tenant, month=date(2026, 11, 1), active=120, over_limit=20, refused=3
    )
    MauCounter.objects.create(tenant=tenant, month=date(2026, 9, 1), active=7)
    MauCounter.objects.create(tenant=tenant, month=date(2025, 11, 1), active=999)
    MauCounter.objects.create(tenant=other_tenant, month=date(2026, 10, 1), active=5)

    # Any day of the month names the month.
    assert selectors.mau_current(tenant, month=date(2026, 11, 17)) == selectors.MauFigure(
        month=date(2026, 11, 1), active=120, over_limit=20, refused=3
    )
    assert selectors.mau_current(other_tenant, month=date(2026, 11, 1)).active == 0

    history = selectors.mau_history(tenant, months=4, until=date(2026, 12, 1))
    assert [(m.month, m.active) for m in history] == [
        (date(2026, 9, 1), 7),
        (date(2026, 10, 1), 0),
        (date(2026, 11, 1), 120),
        (date(2026, 12, 1), 0),
    ]
    year = selectors.mau_history(tenant, until=date(2026, 11, 1))
    assert len(year) == 12 and year[0].month == date(2025, 12, 1)
    assert [m.month for m in selectors.mau_history(tenant, months=3, until=date(2027, 1, 5))] == [
        date(2026, 11, 1),
        date(2026, 12, 1),
        date(2027, 1, 1),
    ]
    default = selectors.mau_history(tenant, months=1)
    assert default[0].month == selectors.month_start()


def test_model_mau_against_each_licence(db: None) -> None:
    from switchboard.licensing.models import ModelLicence

    month = date(2026, 11, 1)
    # Migrations register real models' terms; this test brings its own.
    ModelLicence.objects.all().delete()
    ModelLicence.objects.create(
        model_name="Qwen/Qwen-7B-Chat", licence_name="Tongyi Qianwen", mau_threshold=100_000_000
    )
    ModelLicence.objects.create(model_name="acme/tiny", licence_name="Apache-2.0")
    ModelMauCounter.objects.create(model_name="Qwen/Qwen-7B-Chat", month=month, active=25_000_000)
    ModelMauCounter.objects.create(
        model_name="Qwen/Qwen-7B-Chat", month=date(2026, 10, 1), active=1
    )
    ModelMauCounter.objects.create(model_name="unregistered/x", month=month, active=4)

    figures = selectors.model_mau(month=month)
    assert [(f.model_name, f.active, f.percent_of_threshold) for f in figures] == [
        ("Qwen/Qwen-7B-Chat", 25_000_000, pytest.approx(25.0)),
        ("acme/tiny", 0, None),
        ("unregistered/x", 4, None),
    ]
    assert figures[0].licence_name == "Tongyi Qianwen" and figures[2].licence_name == ""
    assert all(f.month == month for f in figures)


def _alert(tenant: Any, threshold: int, *, acknowledged: bool = False, **extra: Any) -> Alert:
    from django.utils import timezone

    scope = f"tenant:{tenant.pk}" if tenant else "model:Qwen/Qwen-7B-Chat"
    return Alert.objects.create(
        scope=scope,
        subject="tenant_mau" if tenant else "model_mau",
        tenant=tenant,
        month=date(2026, 11, 1),
        threshold_percent=threshold,
        value=threshold,
        limit=100,
        message=f"{threshold} % of the limit",
        acknowledged_at=timezone.now() if acknowledged else None,
        **extra,
    )


def test_alerts_of_a_tenant_and_of_the_operator(tenant: Any, other_tenant: Any) -> None:
    first = _alert(tenant, 80, acknowledged=True)
    second = _alert(tenant, 90)
    _alert(other_tenant, 80)
    operator = _alert(None, 80, model_name="Qwen/Qwen-7B-Chat")

    assert [a.id for a in selectors.alerts_for(tenant)] == [second.pk, first.pk]
    assert [a.id for a in selectors.alerts_for(tenant, unacknowledged_only=True)] == [second.pk]
    item = selectors.alerts_for(tenant)[0]
    assert (item.threshold_percent, item.tenant_id, item.message) == (
        90,
        tenant.pk,
        "90 % of the limit",
    )
    assert [a.id for a in selectors.operator_alerts()] == [operator.pk]
    assert selectors.operator_alerts()[0].model_name == "Qwen/Qwen-7B-Chat"
