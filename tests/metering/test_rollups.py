"""Usage rollups: carried incrementally behind a lag, equal to a recomputation from the
ledger, rebuildable, and never double counted by concurrent runs.

The ground truth is computed here in Python from the records the test itself wrote, not
from the database, so a wrong GROUP BY cannot agree with itself.
"""

from __future__ import annotations

import io
import random
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from switchboard.metering.models import RollupCursor, UsageRecord, UsageRollup
from switchboard.metering.rollups import rollups_rebuild, rollups_update

T0 = datetime(2026, 11, 1, tzinfo=UTC)
LAG_S = 30
OUTCOMES = [choice.value for choice in UsageRecord.Outcome]


@pytest.fixture(autouse=True)
def _lag(settings: Any) -> None:
    settings.SWITCHBOARD_ROLLUP_LAG_S = LAG_S


@dataclass(frozen=True)
class Rec:
    """What the test wrote: the input of the ground truth."""

    id: int
    tenant_id: uuid.UUID
    bot_id: uuid.UUID | None
    created_at: datetime
    outcome: str
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float | None
    latency_ms: float | None


def make_record(
    tenant_id: Any,
    *,
    at: datetime,
    bot_id: Any = None,
    outcome: str = "ok",
    prompt_tokens: int = 10,
    completion_tokens: int = 20,
    ttft_ms: float | None = 50.0,
    latency_ms: float | None = 500.0,
    **extra: Any,
) -> Rec:
    row = UsageRecord.objects.create(
        tenant_id=tenant_id,
        bot_id=bot_id,
        created_at=at,
        outcome=outcome,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        ttft_ms=ttft_ms,
        latency_ms=latency_ms,
        **extra,
    )
    return Rec(
        row.pk,
        row.tenant_id,
        row.bot_id,
        at,
        outcome,
        prompt_tokens,
        completion_tokens,
        ttft_ms,
        latency_ms,
    )


def random_record(rng: random.Random, scopes: list[tuple[Any, Any]], at: datetime) -> Rec:
    tenant_id, bot_id = rng.choice(scopes)
    outcome = rng.choice(OUTCOMES)
    # Calls refused or failed before the first token measured no TTFT.
    ttft = None if outcome in ("busy", "error") or rng.random() < 0.1 else rng.uniform(5, 900)
    latency = None if rng.random() < 0.15 else rng.uniform(100, 9000)
    return make_record(
        tenant_id,
        at=at,
        bot_id=bot_id,
        outcome=outcome,
        prompt_tokens=rng.randint(0, 4000),
        completion_tokens=0 if outcome == "busy" else rng.randint(0, 1000),
        ttft_ms=ttft,
        latency_ms=latency,
    )


Key = tuple[str, datetime, Any, Any]


def truth(records: Iterable[Rec]) -> dict[Key, dict[str, Any]]:
    table: dict[Key, dict[str, Any]] = defaultdict(
        lambda: {
            "requests": 0,
            "ok": 0,
            "failed": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "ttft_ms_sum": 0.0,
            "ttft_count": 0,
            "latency_ms_sum": 0.0,
            "latency_count": 0,
        }
    )
    for r in records:
        hour = r.created_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        for period, bucket in (("hour", hour), ("day", hour.replace(hour=0))):
            row = table[(period, bucket, r.tenant_id, r.bot_id)]
            row["requests"] += 1
            row["ok" if r.outcome == "ok" else "failed"] += 1
            row["prompt_tokens"] += r.prompt_tokens
            row["completion_tokens"] += r.completion_tokens
            if r.ttft_ms is not None:
                row["ttft_ms_sum"] += r.ttft_ms
                row["ttft_count"] += 1
            if r.latency_ms is not None:
                row["latency_ms_sum"] += r.latency_ms
                row["latency_count"] += 1
    return dict(table)


def stored() -> dict[Key, dict[str, Any]]:
    fields = [
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
    return {
        (r.period, r.bucket, r.tenant_id, r.bot_id): {f: getattr(r, f) for f in fields}
        for r in UsageRollup.objects.all()
    }


def assert_rollups_equal(expected: dict[Key, dict[str, Any]]) -> None:
    actual = stored()
    assert set(actual) == set(expected), (
        f"missing {sorted(set(expected) - set(actual))[:5]}, "
        f"extra {sorted(set(actual) - set(expected))[:5]}"
    )
    for key, want in expected.items():
        got = actual[key]
        for field, value in want.items():
            if isinstance(value, float):
                assert got[field] == pytest.approx(value, rel=1e-9, abs=1e-6), (key, field)
            else:
                assert got[field] == value, (key, field)


def cursor_id() -> int:
    return RollupCursor.objects.get(name="usage").last_id


@pytest.fixture
def scopes(db: None) -> list[tuple[Any, Any]]:
    """Three tenants, their bots, usage with no bot, and a bot deleted later."""
    from switchboard.bots.services import bot_create
    from switchboard.tenants.models import Tenant

    result: list[tuple[Any, Any]] = []
    for n in range(3):
        tenant = Tenant.objects.create(name=f"T{n}", slug=f"t{n}-{uuid.uuid4().hex[:6]}")
        for b in range(n + 1):
            bot = bot_create(tenant=tenant, name=f"bot {n}.{b}", system_prompt="Be brief.")
            result.append((tenant.pk, bot.pk))
        result.append((tenant.pk, None))
    # The ledger keeps ids without a database constraint: a bot deleted since.
    result.append((result[0][0], uuid.uuid4()))
    return result


@pytest.mark.django_db
def test_rollups_equal_a_recomputation_from_the_ledger(scopes: list[tuple[Any, Any]]) -> None:
    rng = random.Random(20261127)
    now1 = T0 + timedelta(hours=80)

    def spread(n: int, lo_h: float, hi_h: float) -> list[Rec]:
        return [
            random_record(rng, scopes, T0 + timedelta(hours=rng.uniform(lo_h, hi_h)))
            for _ in range(n)
        ]

    older = spread(180, 0, 50)
    # Inside the lag at now1: a transaction may still be about to commit lower ids.
    recent = [
        random_record(rng, scopes, now1 - timedelta(seconds=rng.uniform(0.5, LAG_S - 1)))
        for _ in range(12)
    ]
    # Old enough, but after a recent row in id order: the cursor cannot jump the fence.
    behind_fence = spread(15, 10, 20)

    assert rollups_update(now=now1) == len(older)
    assert_rollups_equal(truth(older))
    assert cursor_id() == max(r.id for r in older)

    # A second pass before the lag has passed carries nothing more.
    assert rollups_update(now=now1 + timedelta(seconds=1)) == 0
    assert_rollups_equal(truth(older))

    later = spread(140, 50, 79)
    now2 = now1 + timedelta(seconds=LAG_S + 5)
    # Small batches: the loop goes on until it is caught up.
    assert rollups_update(now=now2, batch=7) == len(recent) + len(behind_fence) + len(later)
    everything = older + recent + behind_fence + later
    assert_rollups_equal(truth(everything))
    assert rollups_update(now=now2) == 0

    # A few more passes with rows trickling in, some into existing buckets.
    for step in range(3):
        more = spread(20, 0, 79)
        everything += more
        assert rollups_update(now=now2 + timedelta(minutes=step + 1)) == len(more)
    expected = truth(everything)
    assert_rollups_equal(expected)
    assert {k[0] for k in expected} == {"hour", "day"}
    assert len({k[2] for k in expected}) == 3

    # Rebuilding everything from the ledger gives the same rollups.
    assert rollups_rebuild() == len(everything)
    assert_rollups_equal(expected)


@pytest.mark.django_db
def test_rebuild_restores_whole_days_and_leaves_rows_past_the_cursor(
    scopes: list[tuple[Any, Any]],
) -> None:
    rng = random.Random(7)
    records = [
        random_record(rng, scopes, T0 + timedelta(hours=rng.uniform(0, 72))) for _ in range(150)
    ]
    now = T0 + timedelta(days=4)
    rollups_update(now=now)
    tenant_id = scopes[0][0]
    day2 = T0 + timedelta(days=1)

    # Damage one tenant's second day, hourly and daily; another tenant's too.
    UsageRollup.objects.filter(bucket__gte=day2, bucket__lt=day2 + timedelta(days=1)).update(
        requests=999_999
    )
    # Past the cursor: inside the lag, so not carried yet.
    pending = make_record(tenant_id, at=now - timedelta(seconds=1))
    pending_late = make_record(tenant_id, at=day2 + timedelta(hours=3))

    # Mid-day bounds are widened to the whole day.
    counted = rollups_rebuild(
        tenant_id=tenant_id, start=day2 + timedelta(hours=5), end=day2 + timedelta(hours=6)
    )
    on_day2 = [
        r
        for r in records
        if r.tenant_id == tenant_id and day2 <= r.created_at < day2 + timedelta(days=1)
    ]
    assert counted == len(on_day2) > 0
    actual = stored()
    for key, want in truth(records).items():
        _, bucket, tenant, _ = key
        damaged = day2 <= bucket < day2 + timedelta(days=1) and tenant != tenant_id
        assert (actual[key]["requests"] == 999_999) is damaged
        if not damaged:
            assert actual[key]["requests"] == want["requests"]

    # The rest of the damage, then the pending rows: each counted once.
    rollups_rebuild(start=day2, end=day2 + timedelta(days=1))
    assert_rollups_equal(truth(records))
    assert rollups_update(now=now + timedelta(seconds=LAG_S)) == 2
    assert_rollups_equal(truth([*records, pending, pending_late]))


@pytest.mark.django_db
def test_outcomes_tokens_and_means_of_one_bucket(tenant: Any, bot: Any) -> None:
    at = T0 + timedelta(hours=5, minutes=10)
    make_record(tenant.pk, at=at, bot_id=bot.pk, outcome="ok", ttft_ms=100, latency_ms=1000)
    make_record(tenant.pk, at=at, bot_id=bot.pk, outcome="partial", ttft_ms=300, latency_ms=None)
    make_record(tenant.pk, at=at, bot_id=bot.pk, outcome="busy", ttft_ms=None, latency_ms=2.5)
    make_record(tenant.pk, at=at, bot_id=bot.pk, outcome="error", prompt_tokens=0, ttft_ms=None)
    assert rollups_update(now=T0 + timedelta(days=1)) == 4
    hour = UsageRollup.objects.get(period="hour")
    day = UsageRollup.objects.get(period="day")
    assert hour.bucket == T0 + timedelta(hours=5) and day.bucket == T0
    for row in (hour, day):
        assert (row.requests, row.ok, row.failed) == (4, 1, 3)
        assert (row.prompt_tokens, row.completion_tokens) == (30, 80)
        assert (row.ttft_ms_sum, row.ttft_count) == (400.0, 2)
        assert (row.latency_ms_sum, row.latency_count) == (1502.5, 3)


@pytest.mark.django_db
def test_buckets_are_utc_whatever_the_offset_of_the_timestamp(tenant: Any) -> None:
    shanghai = datetime(2026, 11, 2, 7, 30, tzinfo=UTC).astimezone(ZoneInfo("Asia/Shanghai"))
    make_record(tenant.pk, at=shanghai)
    rollups_update(now=T0 + timedelta(days=5))
    buckets = dict(UsageRollup.objects.values_list("period", "bucket"))
    assert buckets == {
        "hour": datetime(2026, 11, 2, 7, tzinfo=UTC),
        "day": datetime(2026, 11, 2, tzinfo=UTC),
    }


@pytest.mark.django_db
def test_nothing_to_carry(db: None) -> None:
    assert rollups_update() == 0
    assert rollups_rebuild() == 0
    assert cursor_id() == 0
    with pytest.raises(ValueError):
        rollups_update(batch=0)


@pytest.mark.django_db
def test_rebuild_command(scopes: list[tuple[Any, Any]]) -> None:
    from switchboard.tenants.models import Tenant

    tenant = Tenant.objects.get(pk=scopes[0][0])
    other = Tenant.objects.get(pk=scopes[-2][0])
    a = make_record(tenant.pk, at=T0 + timedelta(hours=30))
    b = make_record(other.pk, at=T0 + timedelta(hours=30))
    rollups_update(now=T0 + timedelta(days=3))
    UsageRollup.objects.update(requests=0)

    out = io.StringIO()
    call_command(
        "rebuild_rollups",
        "--tenant",
        tenant.slug,
        "--from",
        "2026-11-02",
        "--to",
        "2026-11-03",
        stdout=out,
    )
    assert "from 1 ledger rows" in out.getvalue()
    requests = {t: n for t, n in UsageRollup.objects.values_list("tenant_id", "requests")}
    assert requests == {a.tenant_id: 1, b.tenant_id: 0}

    call_command("rebuild_rollups", stdout=out)
    assert_rollups_equal(truth([a, b]))

    with pytest.raises(CommandError, match="no tenant"):
        call_command("rebuild_rollups", "--tenant", "nobody")
    with pytest.raises(CommandError, match="after"):
        call_command("rebuild_rollups", "--from", "2026-11-03", "--to", "2026-11-02")
    with pytest.raises(CommandError):
        call_command("rebuild_rollups", "--from", "yesterday")


def _in_thread(target: Any, *args: Any) -> threading.Thread:
    def run() -> None:
        try:
            target(*args)
        finally:
            # Each thread has its own connection; leave none behind for the flush.
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.django_db(transaction=True)
def test_concurrent_updates_never_double_count(scopes: list[tuple[Any, Any]]) -> None:
    rng = random.Random(99)
    records = [
        random_record(rng, scopes, T0 + timedelta(hours=rng.uniform(0, 48))) for _ in range(300)
    ]
    now = T0 + timedelta(days=3)
    start = threading.Barrier(3)
    carried: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            start.wait(timeout=30)
            for _ in range(3):
                n = rollups_update(now=now, batch=13)
                with lock:
                    carried.append(n)
        except BaseException as exc:  # collected and re-raised in the test's thread
            errors.append(exc)

    threads = [_in_thread(worker) for _ in range(3)]
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)
    assert sum(carried) == len(records)
    assert_rollups_equal(truth(records))


@pytest.mark.django_db(transaction=True)
def test_a_transaction_committing_late_with_a_lower_id_is_not_skipped(tenant: Any) -> None:
    """Within the lag, a row inserted (id N) but not yet committed while a later row (id
    N+1) is already visible is waited for, not jumped over."""
    now = T0 + timedelta(days=1)
    inserted = threading.Event()
    release = threading.Event()
    slow: list[Rec] = []

    def slow_writer() -> None:
        with transaction.atomic():
            slow.append(make_record(tenant.pk, at=now, prompt_tokens=1))
            inserted.set()
            release.wait(timeout=60)

    thread = _in_thread(slow_writer)
    try:
        assert inserted.wait(timeout=30)
        fast = make_record(tenant.pk, at=now + timedelta(seconds=1), prompt_tokens=2)
        assert fast.id > slow[0].id
        # The fast row is visible, but inside the lag: nothing may move the cursor past N.
        assert rollups_update(now=now + timedelta(seconds=LAG_S - 5)) == 0
    finally:
        release.set()
        thread.join(timeout=30)
    assert rollups_update(now=now + timedelta(seconds=LAG_S + 5)) == 2
    assert_rollups_equal(truth([slow[0], fast]))
