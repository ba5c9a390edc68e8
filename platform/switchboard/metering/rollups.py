"""Hourly and daily usage rollups, carried forward from the ledger and rebuildable from it.

The ledger (`UsageRecord`) is append-only and its ids grow with every insert; a cursor
row (`RollupCursor` "usage") says how far, by id, the rollups have been carried. Every
ledger row with an id at or below the cursor is counted in the rollups exactly once, and
no row above it is: that one invariant is what `rollups_update` keeps and what
`rollups_rebuild` restores.

Why there is a lag. Ids are handed out when a row is inserted, but the row becomes
visible only when its transaction commits; a transaction that took id 41 may commit
after the one that took id 42. A cursor advanced to 42 on seeing 42 would skip 41 for
ever. So the update takes ledger rows in id order and stops at the first one that is not
yet older than `SWITCHBOARD_ROLLUP_LAG_S`: the cursor never moves past a row it has not
seen, and a row it has not seen can only be one whose transaction is still open.

The assumptions that make this exact, which the ledger's writers must keep:
- no transaction that writes ledger rows stays open longer than the lag;
- `created_at` is stamped when the row is written (not, say, when the inference call
  began), and the clocks of the hosts writing the ledger and running beat agree to well
  within the lag.
A row that breaks them is not lost: it stays in the ledger, and `rollups_rebuild` over its
day counts it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from switchboard.metering.models import RollupCursor, UsageRecord, UsageRollup

logger = logging.getLogger(__name__)

CURSOR_NAME = "usage"

# Larger than any id, so "no fence" needs no special case in SQL.
_NO_FENCE = 2**63 - 1

_LEDGER = UsageRecord._meta.db_table
_ROLLUP = UsageRollup._meta.db_table

# The ledger columns the rollups need; every source CTE below is named "taken" and
# yields exactly these.
_COLUMNS = (
    "id, tenant_id, bot_id, created_at, outcome, prompt_tokens, completion_tokens, "
    "ttft_ms, latency_ms"
)


def _insert_sql(period: str) -> str:
    # `period` is one of two constants of this module, never user input. Buckets are
    # computed in UTC whatever the session's time zone is.
    if period not in (UsageRollup.Period.HOUR, UsageRollup.Period.DAY):
        raise ValueError(f"unknown period {period!r}")
    # Only module constants are interpolated; values travel as parameters.
    return f"""
        INSERT INTO {_ROLLUP} AS rollup (
            period, bucket, tenant_id, bot_id, requests, ok, failed, prompt_tokens,
            completion_tokens, ttft_ms_sum, ttft_count, latency_ms_sum, latency_count
        )
        SELECT
            '{period}',
            date_trunc('{period}', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
            tenant_id,
            bot_id,
            count(*),
            count(*) FILTER (WHERE outcome = '{UsageRecord.Outcome.OK}'),
            count(*) FILTER (WHERE outcome <> '{UsageRecord.Outcome.OK}'),
            coalesce(sum(prompt_tokens), 0),
            coalesce(sum(completion_tokens), 0),
            coalesce(sum(ttft_ms), 0),
            count(ttft_ms),
            coalesce(sum(latency_ms), 0),
            count(latency_ms)
        FROM taken
        GROUP BY 2, tenant_id, bot_id
        ON CONFLICT (period, bucket, tenant_id, bot_id) DO UPDATE SET
            requests = rollup.requests + EXCLUDED.requests,
            ok = rollup.ok + EXCLUDED.ok,
            failed = rollup.failed + EXCLUDED.failed,
            prompt_tokens = rollup.prompt_tokens + EXCLUDED.prompt_tokens,
            completion_tokens = rollup.completion_tokens + EXCLUDED.completion_tokens,
            ttft_ms_sum = rollup.ttft_ms_sum + EXCLUDED.ttft_ms_sum,
            ttft_count = rollup.ttft_count + EXCLUDED.ttft_count,
            latency_ms_sum = rollup.latency_ms_sum + EXCLUDED.latency_ms_sum,
            latency_count = rollup.latency_count + EXCLUDED.latency_count
        RETURNING 1
    """  # noqa: S608


def _carry_sql(taken: str) -> str:
    """One statement: fold the rows of the CTE(s) `taken` into both periods, and say how
    many rows that was and the highest id among them.

    One statement, so both periods and the count see the same snapshot."""
    return f"""
        WITH {taken},
        hour_rows AS ({_insert_sql(UsageRollup.Period.HOUR)}),
        day_rows AS ({_insert_sql(UsageRollup.Period.DAY)})
        SELECT count(*), max(id) FROM taken
    """  # noqa: S608


# The next batch after the cursor, cut at the first row still inside the lag: rows after
# that one wait for the next run even when they are old enough themselves, because the
# cursor can only advance over an unbroken run of ids.
_UPDATE_SQL = _carry_sql(
    f"""
    batch AS MATERIALIZED (
        SELECT {_COLUMNS} FROM {_LEDGER}
        WHERE id > %(after)s
        ORDER BY id
        LIMIT %(limit)s
    ),
    taken AS MATERIALIZED (
        SELECT * FROM batch
        WHERE id < coalesce(
            (SELECT min(id) FROM batch WHERE created_at >= %(horizon)s), {_NO_FENCE}
        )
    )
    """  # noqa: S608
)


@dataclass(frozen=True, slots=True)
class _Carried:
    rows: int
    last_id: int | None


def _run(sql: str, params: dict[str, Any]) -> _Carried:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows, last_id = cursor.fetchone()
    return _Carried(rows=int(rows), last_id=last_id)


def _locked_cursor() -> RollupCursor:
    # The row lock is what serialises concurrent runs (two beat workers, an update and a
    # rebuild): the second waits here and then reads the first one's committed position.
    cursor, _ = RollupCursor.objects.select_for_update().get_or_create(name=CURSOR_NAME)
    return cursor


def rollups_update(*, now: datetime | None = None, batch: int = 50_000) -> int:
    """Carry the hourly and daily rollups over ledger rows not yet counted.

    Takes rows after the cursor, in id order, up to the first one not yet older than
    `SWITCHBOARD_ROLLUP_LAG_S` (see the module's docstring for why), in batches of
    `batch` rows, each batch in its own transaction, until caught up. Returns how many
    ledger rows were carried. Safe to run concurrently: runs take turns on the cursor.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    now = now or timezone.now()
    horizon = now - timedelta(seconds=settings.SWITCHBOARD_ROLLUP_LAG_S)
    total = 0
    while True:
        with transaction.atomic():
            cursor = _locked_cursor()
            carried = _run(
                _UPDATE_SQL, {"after": cursor.last_id, "limit": batch, "horizon": horizon}
            )
            if carried.rows:
                cursor.last_id = carried.last_id
                cursor.save(update_fields=["last_id", "updated_at"])
        total += carried.rows
        # A short batch means the ledger ran out or the lag fence was reached.
        if carried.rows < batch:
            break
    if total:
        logger.info("usage rollups: carried %d ledger rows", total)
    return total


def _day_floor(value: datetime) -> datetime:
    value = value.astimezone(UTC)
    return datetime.combine(value.date(), time.min, tzinfo=UTC)


def _day_ceil(value: datetime) -> datetime:
    floor = _day_floor(value)
    return floor if floor == value else floor + timedelta(days=1)


def rollups_rebuild(
    *,
    tenant_id: Any = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> int:
    """Recompute the rollups of whole UTC days from the ledger.

    `start` is rounded down and `end` up to midnight UTC, so a rebuild always covers
    whole days (the day rollups and every hour within them); either may be None for "from
    the first row" / "to the last". Only ledger rows up to the cursor are counted: rows
    after it belong to `rollups_update`, which would otherwise count them a second time.
    Returns how many ledger rows were counted.

    Runs in one transaction holding the cursor, so updates wait for it; rebuild long
    ranges in slices if that matters.
    """
    if start is not None and end is not None and end <= start:
        raise ValueError("end must be after start")
    day_start = _day_floor(start) if start is not None else None
    day_end = _day_ceil(end) if end is not None else None

    rollups = UsageRollup.objects.all()
    conditions = ["id <= %(upto)s"]
    params: dict[str, Any] = {}
    if tenant_id is not None:
        rollups = rollups.filter(tenant_id=tenant_id)
        conditions.append("tenant_id = %(tenant)s")
        params["tenant"] = tenant_id
    if day_start is not None:
        rollups = rollups.filter(bucket__gte=day_start)
        conditions.append("created_at >= %(start)s")
        params["start"] = day_start
    if day_end is not None:
        rollups = rollups.filter(bucket__lt=day_end)
        conditions.append("created_at < %(end)s")
        params["end"] = day_end
    sql = _carry_sql(
        f"taken AS MATERIALIZED (SELECT {_COLUMNS} FROM {_LEDGER} "  # noqa: S608
        f"WHERE {' AND '.join(conditions)})"
    )

    with transaction.atomic():
        cursor = _locked_cursor()
        params["upto"] = cursor.last_id
        rollups.delete()
        carried = _run(sql, params)
    logger.info(
        "usage rollups rebuilt from %d ledger rows (tenant %s, %s to %s)",
        carried.rows,
        tenant_id or "all",
        day_start or "start",
        day_end or "end",
    )
    return carried.rows
