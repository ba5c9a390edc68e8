"""Metering at scale: admission, MAU reads, dashboards and storage against naive queries.

Loads a dedicated PostgreSQL database with synthetic data at production scale (by default
10 million end users and 50 million answered messages over three months), then measures,
each beside a naive baseline in the same run:

1. admission per message (`metering.admission.admit`) on the cached path (the user was
   counted this month already) and on the first-of-month path, against what a system
   without counters must do: COUNT(DISTINCT end_user_id) over the month's ledger rows
   plus an EXISTS for the user;
2. reading a tenant's current MAU (a MauCounter primary-key lookup) against
   COUNT(DISTINCT) over the ledger;
3. a month's usage dashboard (per day: requests, tokens, mean TTFT) from the day rollups
   against GROUP BY day over the ledger;
4. bytes stored per end user per month (metering_monthlyactiveuser, with its indexes).

Loading is the slow part (minutes to tens of minutes): it runs in SQL with
`INSERT … SELECT … FROM generate_series` over two connections, with the tables'
secondary indexes dropped and rebuilt afterwards. `--keep` keeps the database after the
run, and the next run at the same scale reuses it.

Run ``python -m bench.metering --help`` for the knobs. No timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform as host_platform
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from bench._sim import command_line, percentile, table

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/switchboard_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
MODEL = "Qwen/Qwen-7B-Chat"
BOTS_PER_TENANT = 2
# The big tenant's share of the end users; the others share the rest by 1/k.
BIG_TENANT_SHARE = 0.5
# Ledger rows per month, oldest first; the last is the current month up to the load.
MONTH_SHARES = (0.18, 0.27, 0.55)
# A message's end user is the tenant's user number floor(n * r**SKEW), r uniform, so a
# few heavy users send much and many send nothing in a month.
SKEW = 3
# Each month's heavy users are shifted by this fraction of the tenant's users, so the
# active set changes from month to month as it does in life.
MONTHLY_SHIFT = 1 / 7
META_TABLE = "bench_metering_meta"
# A naive baseline past its time budget still gets this many samples.
MIN_NAIVE_SAMPLES = 3
# Statements of the load, one per chunk of ledger rows: small enough to show progress.
LEDGER_CHUNK = 2_000_000
# Session settings for the load connections only; measurements run with the server's.
LOAD_SETTINGS = (
    # Skips foreign-key and append-only triggers for bulk rows generated consistent.
    "SET session_replication_role = replica",
    "SET synchronous_commit = off",
    "SET maintenance_work_mem = '1GB'",
    "SET work_mem = '256MB'",
    "SET max_parallel_maintenance_workers = 0",
)
# Tables loaded in bulk, in the order they are filled.
BULK_TABLES = (
    "conversations_enduser",
    "metering_usagerecord",
    "metering_monthlyactiveuser",
    "metering_modelactiveuser",
    "metering_usagerollup",
)


# --- command line -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.metering",
        description=__doc__.split("\n\n")[0],
        epilog="The database named by --database-url is the benchmark's own: it is created "
        "if absent, and dropped and loaded again when it holds another scale (only if it "
        f"has the benchmark's {META_TABLE} table or no tenants). Redis keys under "
        "switchboard:meter: in the --redis-url database are deleted at the start.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    scale = parser.add_argument_group("scale")
    scale.add_argument(
        "--users", type=int, default=10_000_000, help="synthetic end users in all tenants"
    )
    scale.add_argument(
        "--messages",
        type=int,
        default=50_000_000,
        help="answered messages (ledger rows) over three months, "
        f"{', '.join(f'{round(s * 100)}%%' for s in MONTH_SHARES)} of them oldest to current "
        "month",
    )
    scale.add_argument(
        "--tenants",
        type=int,
        default=10,
        help=f"tenants; the first holds {round(BIG_TENANT_SHARE * 100)}%% of the users and "
        "the others share the rest by 1/k",
    )
    measure = parser.add_argument_group("measurement")
    measure.add_argument(
        "--samples",
        type=int,
        default=5000,
        help="timed calls per path of ours (admission paths, MAU read); the dashboard "
        "query runs min(samples, 1000) times",
    )
    measure.add_argument(
        "--naive-samples",
        type=int,
        default=10,
        help="timed calls of each naive COUNT(DISTINCT)/GROUP BY baseline (seconds each at "
        "full scale)",
    )
    measure.add_argument(
        "--naive-budget",
        type=float,
        default=120.0,
        help="seconds after which a naive baseline stops taking samples (once it has "
        f"{MIN_NAIVE_SAMPLES}), so that a slow one cannot take the run hostage",
    )
    measure.add_argument(
        "--warmup", type=int, default=200, help="untimed calls of ours before each timed run"
    )
    measure.add_argument(
        "--threads",
        type=int,
        default=4,
        help="also run the cached and first-of-month admissions from this many threads at "
        "once (and from 1), for throughput",
    )
    measure.add_argument("--seed", type=int, default=1, help="seed of the samples drawn")
    data = parser.add_argument_group("data")
    data.add_argument(
        "--keep",
        action="store_true",
        help="keep the loaded database after the run, so that the next run at the same "
        "scale reuses it instead of loading again (without --keep it is dropped at the end)",
    )
    data.add_argument(
        "--reload", action="store_true", help="load again even if the data is there already"
    )
    data.add_argument(
        "--drop", action="store_true", help="only drop the benchmark database, then exit"
    )
    data.add_argument(
        "--load-workers",
        type=int,
        default=2,
        help="PostgreSQL connections loading in parallel (one per core is about right)",
    )
    data.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="the benchmark's own PostgreSQL database (created if absent)",
    )
    data.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="Redis for admission")
    args = parser.parse_args(argv)
    if args.users < args.tenants or args.tenants < 1:
        parser.error("need at least one tenant and one end user per tenant")
    if args.messages < 1000 or args.samples < 1 or args.naive_samples < 1:
        parser.error("need --messages >= 1000, --samples >= 1 and --naive-samples >= 1")
    return args


# --- database bootstrap ---------------------------------------------------------------------


def _database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def _maintenance_url(url: str) -> str:
    # CREATE/DROP DATABASE run from the server's own "postgres" database.
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/postgres"))


def _database_exists(url: str) -> bool:
    with psycopg.connect(_maintenance_url(url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [_database_name(url)]
        ).fetchone()
    return row is not None


def _is_ours(url: str) -> bool:
    """Whether the database may be dropped: it is the benchmark's or holds no tenant."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        }
        if META_TABLE in tables:
            return True
        if "tenants_tenant" not in tables:
            return True
        row = conn.execute("SELECT count(*) FROM tenants_tenant").fetchone()
        return row is not None and row[0] == 0


def drop_database(url: str) -> None:
    if not _database_exists(url):
        return
    if not _is_ours(url):
        raise SystemExit(
            f"refusing to drop {_database_name(url)!r}: it holds tenants and is not a "
            "benchmark database"
        )
    with psycopg.connect(_maintenance_url(url), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(_database_name(url)))
        )


def create_database(url: str) -> None:
    if _database_exists(url):
        return
    with psycopg.connect(_maintenance_url(url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(_database_name(url))))


def read_meta(url: str) -> dict[str, Any] | None:
    if not _database_exists(url):
        return None
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", [META_TABLE]).fetchone()
        if exists is None or exists[0] is None:
            return None
        row = conn.execute(
            sql.SQL("SELECT value FROM {} WHERE key = 'load'").format(sql.Identifier(META_TABLE))
        ).fetchone()
    return None if row is None else dict(row[0])


def write_meta(url: str, meta: dict[str, Any]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (key text PRIMARY KEY, value jsonb)").format(
                sql.Identifier(META_TABLE)
            )
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {} VALUES ('load', %s) ON CONFLICT (key) DO UPDATE "
                "SET value = EXCLUDED.value"
            ).format(sql.Identifier(META_TABLE)),
            [json.dumps(meta)],
        )


def configure_django(database_url: str, redis_url: str) -> None:
    """Point Django at the benchmark's database and Redis; set up; migrate."""
    source_root = str(REPO_ROOT / "platform")
    if source_root not in sys.path:
        sys.path.insert(0, source_root)
    # Assigned, not defaulted: an inherited DATABASE_URL (a test or dev database) must never
    # receive 50 million rows.
    os.environ["DATABASE_URL"] = database_url
    os.environ["REDIS_URL"] = redis_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "switchboard.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


# --- calendar -------------------------------------------------------------------------------


def month_start(moment: datetime) -> date:
    utc = moment.astimezone(UTC)
    return date(utc.year, utc.month, 1)


def add_months(month: date, months: int) -> date:
    index = month.year * 12 + month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def at_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


# --- scale ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    users: int
    messages: int
    tenants: int

    def users_per_tenant(self) -> list[int]:
        if self.tenants == 1:
            return [self.users]
        rest_weights = [1.0 / k for k in range(1, self.tenants)]
        total = sum(rest_weights)
        shares = [BIG_TENANT_SHARE] + [(1 - BIG_TENANT_SHARE) * w / total for w in rest_weights]
        counts = [max(1, int(self.users * s)) for s in shares]
        counts[0] += self.users - sum(counts)
        return counts

    def messages_per_month(self) -> list[int]:
        counts = [int(self.messages * s) for s in MONTH_SHARES]
        counts[-1] += self.messages - sum(counts)
        return counts


@dataclass
class Loaded:
    """What the measurements need to know about the data, kept in the meta table."""

    scale: Scale
    month: date  # the current month at load time
    tenant_ids: list[str]  # biggest first
    users_per_tenant: list[int]
    first_user_id: list[int]
    # Ledger id ranges per month, oldest first: [first id, last id].
    month_ids: list[tuple[int, int]]
    load_s: dict[str, float] = field(default_factory=dict)
    loaded_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "users": self.scale.users,
            "messages": self.scale.messages,
            "tenants": self.scale.tenants,
            "month": self.month.isoformat(),
            "tenant_ids": self.tenant_ids,
            "users_per_tenant": self.users_per_tenant,
            "first_user_id": self.first_user_id,
            "month_ids": self.month_ids,
            # Pairs, not an object: jsonb would not keep the steps in order.
            "load_s": list(self.load_s.items()),
            "loaded_at": self.loaded_at,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Loaded:
        return cls(
            scale=Scale(value["users"], value["messages"], value["tenants"]),
            month=date.fromisoformat(value["month"]),
            tenant_ids=list(value["tenant_ids"]),
            users_per_tenant=list(value["users_per_tenant"]),
            first_user_id=list(value["first_user_id"]),
            month_ids=[(int(a), int(b)) for a, b in value["month_ids"]],
            load_s={str(k): float(v) for k, v in value["load_s"]},
            loaded_at=value.get("loaded_at", ""),
        )


# --- load ----------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


@contextmanager
def load_connection(url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in LOAD_SETTINGS:
            conn.execute(statement)
        yield conn


def run_parallel(url: str, workers: int, statements: Sequence[tuple[str, Any]]) -> None:
    """Run independent statements over `workers` load connections, in order of submission."""
    pending = list(statements)

    def worker() -> None:
        with load_connection(url) as conn:
            while pending:
                try:
                    query, params = pending.pop(0)
                except IndexError:
                    return
                conn.execute(query, params)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(worker) for _ in range(max(1, workers))]:
            future.result()


@dataclass(frozen=True)
class IndexDef:
    table: str
    name: str
    create: str  # the statement that recreates it
    is_constraint: bool


def secondary_indexes(conn: psycopg.Connection[Any], table: str) -> list[IndexDef]:
    """Every index of `table` that no foreign key depends on, with how to recreate it.

    Primary keys referenced by other tables' foreign keys stay: the rows go in key order,
    which a B-tree absorbs cheaply, and dropping them would need the referencing keys
    dropped too.
    """
    rows = conn.execute(
        """
        SELECT i.relname, pg_get_indexdef(i.oid), c.conname, pg_get_constraintdef(c.oid),
               EXISTS (SELECT 1 FROM pg_constraint f WHERE f.contype = 'f'
                       AND f.conindid = i.oid)
        FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        LEFT JOIN pg_constraint c ON c.conindid = i.oid AND c.conrelid = x.indrelid
             AND c.contype IN ('p', 'u')
        WHERE x.indrelid = %s::regclass
        ORDER BY i.relname
        """,
        [table],
    ).fetchall()
    result = []
    for name, index_def, con_name, con_def, referenced in rows:
        if referenced:
            continue
        if con_name is not None:
            create = sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                sql.Identifier(table), sql.Identifier(con_name), sql.SQL(con_def)
            )
            result.append(IndexDef(table, con_name, create.as_string(conn), True))
        else:
            result.append(IndexDef(table, name, index_def, False))
    return result


def drop_indexes(conn: psycopg.Connection[Any], indexes: Sequence[IndexDef]) -> None:
    for index in indexes:
        if index.is_constraint:
            conn.execute(
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                    sql.Identifier(index.table), sql.Identifier(index.name)
                )
            )
        else:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(index.name)))


class Stopwatch:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._started = time.perf_counter()

    @contextmanager
    def lap(self, name: str) -> Iterator[None]:
        log(f"{name} …")
        start = time.perf_counter()
        yield
        self.laps[name] = round(time.perf_counter() - start, 1)
        log(f"{name}: {self.laps[name]:.1f} s")

    def total(self) -> float:
        return round(time.perf_counter() - self._started, 1)


def create_fixtures(scale: Scale, now: datetime) -> tuple[list[str], list[list[str]], list[str]]:
    """Tenants, their licences (generous limits), bots and webhook connectors, by the ORM."""
    from switchboard.bots.models import Bot, Connector
    from switchboard.licensing.models import Licence
    from switchboard.tenants.models import Tenant

    tenant_ids: list[str] = []
    bot_ids: list[list[str]] = []
    connector_ids: list[str] = []
    for i in range(scale.tenants):
        tenant = Tenant.objects.create(name=f"Bench tenant {i:02d}", slug=f"bench-{i:02d}")
        # Real limits (not "none"), so admission takes the guarded, rate-checked path; high
        # enough that nothing is refused.
        Licence.objects.create(
            tenant=tenant,
            licence_id=uuid.uuid4(),
            key_id="bench",
            document="{}",
            issued_at=now,
            valid_from=now - timedelta(days=400),
            valid_until=now + timedelta(days=400),
            mau_limit=1_000_000_000,
            monthly_tokens=10**15,
            tenant_messages_per_minute=100_000_000,
            user_messages_per_minute=10_000_000,
            connector_kinds=[],
            max_bots=None,
            enforcement="hard",
        )
        tenant_ids.append(str(tenant.pk))
        bots = []
        for b in range(BOTS_PER_TENANT):
            bot = Bot.objects.create(tenant=tenant, name=f"bot {b}", model_name=MODEL)
            connector = Connector.objects.create(
                tenant=tenant, bot=bot, kind=Connector.Kind.WEBHOOK, name=f"hook {b}"
            )
            bots.append(str(bot.pk))
            connector_ids.append(str(connector.pk))
        bot_ids.append(bots)
    return tenant_ids, bot_ids, connector_ids


_END_USERS_SQL = """
INSERT INTO conversations_enduser (id, tenant_id, channel, external_id, display_name,
    first_seen_at, last_seen_at, counted_models, counted_month)
SELECT g, %(tenant)s, 'webhook', 'user-' || g, '', %(seen)s, %(seen)s, '[]'::jsonb, NULL
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g
"""

# One chunk of ledger rows, ids lo..hi, created_at spread evenly over the month's span so
# that, as in a real append-only ledger, id order is time order.
_LEDGER_SQL = """
INSERT INTO metering_usagerecord (id, tenant_id, bot_id, connector_id, end_user_id,
    message_id, endpoint, model_name, prompt_tokens, completion_tokens, ttft_ms, latency_ms,
    outcome, created_at)
SELECT g,
    (%(tenants)s::uuid[])[t],
    (%(bots)s::uuid[])[(t - 1) * %(per_tenant)s + 1 + (g %% %(per_tenant)s)::int],
    (%(connectors)s::uuid[])[(t - 1) * %(per_tenant)s + 1 + (g %% %(per_tenant)s)::int],
    (%(first_user)s::bigint[])[t]
        + (floor((%(user_count)s::bigint[])[t] * power(r, %(skew)s))::bigint
           + floor((%(user_count)s::bigint[])[t] * %(shift)s)::bigint)
          %% (%(user_count)s::bigint[])[t],
    gen_random_uuid(),
    'gpu-' || (g %% 4)::int,
    %(model)s,
    pt,
    ct,
    CASE WHEN o < 0.985 THEN 20 + 300 * f END,
    CASE WHEN o < 0.985 THEN 20 + 300 * f + 12 * ct END,
    CASE WHEN o < 0.97 THEN 'ok' WHEN o < 0.985 THEN 'partial'
         WHEN o < 0.995 THEN 'busy' ELSE 'error' END,
    %(start)s::timestamptz + ((g - %(first_id)s) * %(step_s)s::float8) * interval '1 second'
FROM (
    SELECT g, width_bucket(random(), %(cumulative)s::float8[]) AS t, random() AS r,
        random() AS o, random() AS f, 50 + floor(random() * 1500)::int AS pt,
        10 + floor(random() * 400)::int AS ct
    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g
) AS s
"""

# The hour rollups straight from the ledger, in the shape `rollups.rollups_update` keeps.
_HOUR_ROLLUPS_SQL = """
INSERT INTO metering_usagerollup (period, bucket, tenant_id, bot_id, requests, ok, failed,
    prompt_tokens, completion_tokens, ttft_ms_sum, ttft_count, latency_ms_sum, latency_count)
SELECT 'hour', date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
    tenant_id, bot_id, count(*), count(*) FILTER (WHERE outcome = 'ok'),
    count(*) FILTER (WHERE outcome <> 'ok'), coalesce(sum(prompt_tokens), 0),
    coalesce(sum(completion_tokens), 0), coalesce(sum(ttft_ms), 0), count(ttft_ms),
    coalesce(sum(latency_ms), 0), count(latency_ms)
FROM metering_usagerecord
WHERE created_at >= %(start)s AND created_at < %(end)s
GROUP BY 2, tenant_id, bot_id
"""

# Day rollups summed from the hour rollups: the same numbers for 1/24 of the work.
_DAY_ROLLUPS_SQL = """
INSERT INTO metering_usagerollup (period, bucket, tenant_id, bot_id, requests, ok, failed,
    prompt_tokens, completion_tokens, ttft_ms_sum, ttft_count, latency_ms_sum, latency_count)
SELECT 'day', date_trunc('day', bucket AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
    tenant_id, bot_id, sum(requests), sum(ok), sum(failed), sum(prompt_tokens),
    sum(completion_tokens), sum(ttft_ms_sum), sum(ttft_count), sum(latency_ms_sum),
    sum(latency_count)
FROM metering_usagerollup WHERE period = 'hour'
GROUP BY 2, tenant_id, bot_id
"""

_MAU_SQL = """
INSERT INTO metering_monthlyactiveuser (tenant_id, month, end_user_id, over_limit)
SELECT DISTINCT tenant_id, %(month)s::date, end_user_id, false
FROM metering_usagerecord
WHERE created_at >= %(start)s AND created_at < %(end)s
"""


def load(url: str, scale: Scale, workers: int) -> Loaded:
    from django.utils import timezone

    from switchboard.metering.models import RollupCursor

    watch = Stopwatch()
    now = timezone.now()
    this_month = month_start(now)
    months = [add_months(this_month, k) for k in range(-len(MONTH_SHARES) + 1, 1)]
    users = scale.users_per_tenant()
    first_user = [1 + sum(users[:i]) for i in range(len(users))]

    with watch.lap("tenants, licences, bots, connectors (ORM)"):
        tenant_ids, bot_ids, connector_ids = create_fixtures(scale, now)

    with load_connection(url) as conn:
        dropped: dict[str, list[IndexDef]] = {}
        for name in BULK_TABLES:
            # Autovacuum would scan the fresh tables in the middle of the load; the explicit
            # VACUUM ANALYZE at the end does its work once.
            conn.execute(
                sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(
                    sql.Identifier(name)
                )
            )
            dropped[name] = secondary_indexes(conn, name)
            drop_indexes(conn, dropped[name])

    with watch.lap(f"end users: {scale.users:,} rows"):
        seen = at_midnight(add_months(this_month, -len(MONTH_SHARES)))
        run_parallel(
            url,
            workers,
            [
                (
                    _END_USERS_SQL,
                    {"tenant": tid, "seen": seen, "lo": lo, "hi": lo + n - 1},
                )
                for tid, lo, n in zip(tenant_ids, first_user, users, strict=True)
            ],
        )

    statements: list[tuple[str, Any]] = []
    month_ids: list[tuple[int, int]] = []
    cumulative = [sum(users[:i]) / scale.users for i in range(len(users))]
    next_id = 1
    load_end = now - timedelta(minutes=10)
    for index, (month, count) in enumerate(zip(months, scale.messages_per_month(), strict=True)):
        start = at_midnight(month)
        end = max(min(at_midnight(add_months(month, 1)), load_end), start + timedelta(minutes=1))
        first_id, last_id = next_id, next_id + count - 1
        month_ids.append((first_id, last_id))
        step_s = (end - start).total_seconds() / max(count, 1)
        for lo in range(first_id, last_id + 1, LEDGER_CHUNK):
            hi = min(lo + LEDGER_CHUNK - 1, last_id)
            params = {
                "tenants": tenant_ids,
                "bots": [b for bots in bot_ids for b in bots],
                "connectors": connector_ids,
                "per_tenant": BOTS_PER_TENANT,
                "first_user": first_user,
                "user_count": users,
                "skew": float(SKEW),
                "shift": (index * MONTHLY_SHIFT) % 1.0,
                "model": MODEL,
                "start": start,
                "first_id": first_id,
                "step_s": step_s,
                "cumulative": cumulative,
                "lo": lo,
                "hi": hi,
            }
            statements.append((_LEDGER_SQL, params))
        next_id = last_id + 1

    with watch.lap(f"ledger: {scale.messages:,} rows in {len(statements)} chunks"):
        run_parallel(url, workers, statements)

    def rebuild(tables: Sequence[str]) -> None:
        creates = [(i.create, None) for t in tables for i in dropped[t]]
        run_parallel(url, workers, creates)

    with watch.lap("end user and ledger indexes"):
        rebuild(["conversations_enduser", "metering_usagerecord"])

    with watch.lap("MonthlyActiveUser: SELECT DISTINCT per month from the ledger"):
        run_parallel(
            url,
            workers,
            [
                (
                    _MAU_SQL,
                    {
                        "month": month,
                        "start": at_midnight(month),
                        "end": at_midnight(add_months(month, 1)),
                    },
                )
                for month in months
            ],
        )
    with watch.lap("ModelActiveUser, counters, their indexes"), load_connection(url) as conn:
        # One model serves every tenant here, and end user ids are unique across tenants,
        # so the model's user-months are the tenants' user-months.
        conn.execute(
            "INSERT INTO metering_modelactiveuser (model_name, month, end_user_id)"
            " SELECT %s, month, end_user_id FROM metering_monthlyactiveuser",
            [MODEL],
        )
        conn.execute(
            "INSERT INTO metering_maucounter (tenant_id, month, active, over_limit, refused)"
            " SELECT tenant_id, month, count(*), 0, 0 FROM metering_monthlyactiveuser"
            " GROUP BY tenant_id, month"
        )
        conn.execute(
            "INSERT INTO metering_modelmaucounter (model_name, month, active)"
            " SELECT model_name, month, count(*) FROM metering_modelactiveuser"
            " GROUP BY model_name, month"
        )
    with watch.lap("MAU indexes"):
        rebuild(["metering_monthlyactiveuser", "metering_modelactiveuser"])

    with watch.lap("hour rollups (GROUP BY over the ledger), day rollups from them"):
        run_parallel(
            url,
            workers,
            [
                (
                    _HOUR_ROLLUPS_SQL,
                    {"start": at_midnight(m), "end": at_midnight(add_months(m, 1))},
                )
                for m in months
            ],
        )
        with load_connection(url) as conn:
            conn.execute(_DAY_ROLLUPS_SQL)
        rebuild(["metering_usagerollup"])
        # Everything loaded is carried: the next `rollups_update` starts after it.
        RollupCursor.objects.update_or_create(name="usage", defaults={"last_id": month_ids[-1][1]})
        with load_connection(url) as conn:
            conn.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)",
                ["metering_usagerecord", month_ids[-1][1]],
            )
            conn.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)",
                ["conversations_enduser", scale.users],
            )

    with watch.lap("VACUUM ANALYZE"):
        tables = [*BULK_TABLES, "metering_maucounter", "metering_modelmaucounter"]
        run_parallel(
            url,
            workers,
            [
                (sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(name)), None)
                for name in tables
            ],
        )
        with load_connection(url) as conn:
            for name in BULK_TABLES:
                conn.execute(
                    sql.SQL("ALTER TABLE {} RESET (autovacuum_enabled)").format(
                        sql.Identifier(name)
                    )
                )
    watch.laps["total"] = watch.total()
    log(f"load total: {watch.laps['total']:.1f} s")
    return Loaded(
        scale=scale,
        month=this_month,
        tenant_ids=tenant_ids,
        users_per_tenant=users,
        first_user_id=first_user,
        month_ids=month_ids,
        load_s=watch.laps,
        loaded_at=now.isoformat(timespec="seconds"),
    )


# --- measurement helpers ----------------------------------------------------------------------


@dataclass
class Result:
    label: str
    variant: str  # "ours" or "naive"
    ns: list[int] = field(default_factory=list)
    total_ns: list[int] = field(default_factory=list)  # with COMMIT, where it applies
    note: str = ""

    def p(self, q: float, *, total: bool = False) -> float:
        values = self.total_ns if total else self.ns
        return percentile([v / 1e6 for v in values], q)


def fmt_ms(value: float) -> str:
    if value != value:  # NaN: not measured
        return "–"
    if value < 1:
        return f"{value:.3f}"
    if value < 100:
        return f"{value:.2f}"
    return f"{value:,.0f}"


def fmt_ratio(naive: float, ours: float) -> str:
    if naive != naive or ours != ours or ours <= 0:
        return "–"
    ratio = naive / ours
    return f"{ratio:,.0f}×" if ratio >= 100 else f"{ratio:.1f}×"


def over_budget(spent_ns: Sequence[int], budget_s: float | None) -> bool:
    """Whether a slow baseline has had its time: at least a few samples, then the budget."""
    return (
        budget_s is not None
        and len(spent_ns) >= MIN_NAIVE_SAMPLES
        and sum(spent_ns) > budget_s * 1e9
    )


def timed(
    fn: Callable[[], Any], samples: int, warmup: int, budget_s: float | None = None
) -> tuple[list[int], Any]:
    for _ in range(warmup):
        fn()
    gc.collect()
    out: list[int] = []
    value = None
    for _ in range(samples):
        start = time.perf_counter_ns()
        value = fn()
        out.append(time.perf_counter_ns() - start)
        if over_budget(out, budget_s):
            break
    return out, value


def one_row(query: str, params: Sequence[Any]) -> tuple[Any, ...]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(query, params)
        row = cursor.fetchone()
    assert row is not None
    return tuple(row)


def all_rows(query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return [tuple(r) for r in cursor.fetchall()]


# --- naive baselines ------------------------------------------------------------------------

_NAIVE_MAU_SQL = (
    "SELECT count(DISTINCT end_user_id) FROM metering_usagerecord"
    " WHERE tenant_id = %s AND created_at >= %s AND created_at < %s"
)
_NAIVE_EXISTS_SQL = (
    "SELECT EXISTS (SELECT 1 FROM metering_usagerecord WHERE tenant_id = %s"
    " AND end_user_id = %s AND created_at >= %s AND created_at < %s)"
)
_NAIVE_DASHBOARD_SQL = """
SELECT date_trunc('day', created_at AT TIME ZONE 'UTC') AS day, count(*),
    sum(prompt_tokens + completion_tokens), avg(ttft_ms)
FROM metering_usagerecord
WHERE tenant_id = %s AND created_at >= %s AND created_at < %s
GROUP BY 1 ORDER BY 1
"""
_OURS_DASHBOARD_SQL = """
SELECT bucket, sum(requests), sum(prompt_tokens + completion_tokens),
    sum(ttft_ms_sum) / nullif(sum(ttft_count), 0)
FROM metering_usagerollup
WHERE tenant_id = %s AND period = 'day' AND bucket >= %s AND bucket < %s
GROUP BY bucket ORDER BY bucket
"""


def naive_admit(
    *, tenant_id: str, end_user_id: int, now: datetime, count_always: bool = True
) -> bool:
    """Admission without counters: the same licence and Redis checks, then the month's MAU
    from the ledger. `count_always=False` is the best a counter-less system can do for a
    known user: an EXISTS finds it active this month, and only a new user needs the count."""
    from switchboard.licensing.services import effective_limits
    from switchboard.metering import admission

    limits = effective_limits(tenant_id)
    if not limits.allows_connector("webhook"):
        return False
    if admission._check_rates(limits, tenant_id=tenant_id, end_user_id=end_user_id, now=now):
        return False
    month = month_start(now)
    start, end = at_midnight(month), at_midnight(add_months(month, 1))
    (known,) = one_row(_NAIVE_EXISTS_SQL, [tenant_id, end_user_id, start, end])
    if known and not count_always:
        return True
    (active,) = one_row(_NAIVE_MAU_SQL, [tenant_id, start, end])
    return bool(known) or limits.mau_limit is None or active < limits.mau_limit


# --- samples ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    tenant_id: str
    end_user_id: int


def active_arrivals(loaded: Loaded, count: int, rng: random.Random) -> list[Arrival]:
    """Messages of this month, drawn from the ledger: heavy users and big tenants come up
    as often as they send. Their users are active (counted) this month."""
    first, last = loaded.month_ids[-1]
    ids = [rng.randint(first, last) for _ in range(count)]
    rows = all_rows(
        "SELECT id, tenant_id, end_user_id FROM metering_usagerecord WHERE id = ANY(%s)",
        [ids],
    )
    by_id = {r[0]: Arrival(str(r[1]), int(r[2])) for r in rows}
    return [by_id[i] for i in ids]


def inactive_users(loaded: Loaded, count: int, rng: random.Random, exclude: set[int]) -> list[int]:
    """End users, uniformly drawn, not active this month."""
    found: list[int] = []
    month = loaded.month
    while len(found) < count:
        ids = [rng.randint(1, loaded.scale.users) for _ in range(4 * (count - len(found)))]
        rows = all_rows(
            "SELECT e.id FROM conversations_enduser e WHERE e.id = ANY(%s)"
            " AND NOT EXISTS (SELECT 1 FROM metering_monthlyactiveuser m"
            " WHERE m.tenant_id = e.tenant_id AND m.month = %s AND m.end_user_id = e.id)",
            [ids, month],
        )
        for (user_id,) in rows:
            if user_id not in exclude and len(found) < count:
                exclude.add(user_id)
                found.append(int(user_id))
    return found


# --- measurements -----------------------------------------------------------------------------


def admit_one(arrival: Arrival, user: Any, now: datetime) -> tuple[int, int]:
    """One admission in its own transaction, committed: (admit() ns, whole block ns)."""
    from django.db import transaction

    from switchboard.metering.admission import admit

    begin = time.perf_counter_ns()
    with transaction.atomic():
        start = time.perf_counter_ns()
        decision = admit(
            tenant_id=arrival.tenant_id,
            end_user=user,
            connector_kind="webhook",
            model_name=MODEL,
            now=now,
        )
        stop = time.perf_counter_ns()
    end = time.perf_counter_ns()
    if not decision.admitted:
        raise RuntimeError(f"admission refused a benchmark message: {decision}")
    return stop - start, end - begin


def statements_of(arrival: Arrival, user: Any, now: datetime) -> list[str]:
    """The SQL one admission sends, savepoints and COMMIT included (not timed)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        admit_one(arrival, user, now)
    sent = [summarise_sql(q["sql"]) for q in captured.captured_queries]
    # Django logs BEGIN and COMMIT around every atomic block, but psycopg sends neither
    # for a transaction in which no statement ran.
    return sent if set(sent) - {"BEGIN", "COMMIT"} else []


def summarise_sql(statement: str) -> str:
    """'INSERT INTO metering_maucounter', 'SAVEPOINT', 'SELECT … FROM licensing_licence'."""
    words = statement.replace('"', "").split()
    if not words:
        return ""
    verb = words[0].upper()
    if verb in ("SAVEPOINT", "BEGIN", "COMMIT", "ROLLBACK"):
        return verb
    if verb == "RELEASE":
        return "RELEASE SAVEPOINT"
    if verb == "INSERT":
        return f"INSERT INTO {words[2]}"
    if verb == "UPDATE":
        return f"UPDATE {words[1]}"
    if verb == "SELECT" and "FROM" in words:
        table_name = words[words.index("FROM") + 1].split(".")[0]
        return f"SELECT … FROM {table_name}"  # noqa: S608 (a label for the report, never run)
    return " ".join(words[:3])


def measure_admission(
    users: dict[int, Any],
    arrivals: Sequence[tuple[Arrival, Callable[[int], datetime]]],
    label: str,
    warmup: int,
    report: Report | None = None,
) -> Result:
    """admit() per arrival, each in its own transaction that commits. The first warm-up
    arrival's statements go into the report's notes."""
    result = Result(label, "ours")
    gc.collect()
    for index, (arrival, when) in enumerate(arrivals):
        user = users[arrival.end_user_id]
        # The last warm-up arrival shows the steady state (caches filled).
        if index == warmup - 1 and report is not None:
            sent = statements_of(arrival, user, when(index))
            report.notes.append(
                f"{label}: {len(sent)} round trips to PostgreSQL per admission"
                + (f" ({'; '.join(sent)})" if sent else "")
            )
            continue
        admit_ns, total_ns = admit_one(arrival, user, when(index))
        if index >= warmup:
            result.ns.append(admit_ns)
            result.total_ns.append(total_ns)
    return result


def measure_concurrent(
    users: dict[int, Any],
    arrivals: Sequence[tuple[Arrival, Callable[[int], datetime]]],
    label: str,
    threads: int,
) -> tuple[Result, float]:
    """The same admissions from `threads` threads, each with its own connection; returns
    the latencies and admissions per second."""
    from django.db import connection

    result = Result(f"{label}, {threads} thread{'s' if threads > 1 else ''}", "ours")
    shares = [list(enumerate(arrivals))[i::threads] for i in range(threads)]

    def worker(share: list[tuple[int, tuple[Arrival, Callable[[int], datetime]]]]) -> None:
        try:
            for index, (arrival, when) in share:
                admit_ns, total_ns = admit_one(arrival, users[arrival.end_user_id], when(index))
                result.ns.append(admit_ns)
                result.total_ns.append(total_ns)
        finally:
            connection.close()

    gc.collect()
    begin = time.perf_counter()
    with LockWaitSampler() as waits, ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(worker, share) for share in shares]:
            future.result()
    rate = len(arrivals) / (time.perf_counter() - begin)
    result.note = waits.summary()
    return result, rate


class LockWaitSampler:
    """Samples pg_stat_activity every few milliseconds from its own connection: how often
    the other active backends of this database were waiting on a lock, and in which
    statement."""

    def __init__(self, interval_s: float = 0.002) -> None:
        from django.db import connection

        self._dsn = connection.get_connection_params()
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.active = 0
        self.waiting: dict[str, int] = {}

    def _run(self) -> None:
        params = dict(self._dsn)
        params.pop("cursor_factory", None)
        params.pop("context", None)
        with psycopg.connect(autocommit=True, **params) as conn:
            while not self._stop.is_set():
                for kind, query in conn.execute(
                    "SELECT wait_event_type, query FROM pg_stat_activity WHERE datname ="
                    " current_database() AND state = 'active' AND pid <> pg_backend_pid()"
                ).fetchall():
                    self.active += 1
                    if kind == "Lock":
                        what = summarise_sql(query or "")
                        self.waiting[what] = self.waiting.get(what, 0) + 1
                time.sleep(self._interval)

    def summary(self) -> str:
        if not self.active:
            return "no statement seen running"
        waits = sum(self.waiting.values())
        detail = ", ".join(
            f"{100 * n / self.active:.0f} % in {what}"
            for what, n in sorted(self.waiting.items(), key=lambda kv: -kv[1])
        )
        return (
            f"{100 * waits / self.active:.0f} % of running statements seen waiting on a row lock"
            + (f": {detail}" if detail else "")
        )

    def __enter__(self) -> LockWaitSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure_naive_admission(
    arrivals: Sequence[Arrival],
    now: Callable[[], datetime],
    label: str,
    count_always: bool,
    budget_s: float | None,
) -> Result:
    from django.db import transaction

    result = Result(label, "naive")
    for arrival in arrivals:
        begin = time.perf_counter_ns()
        with transaction.atomic():
            start = time.perf_counter_ns()
            admitted = naive_admit(
                tenant_id=arrival.tenant_id,
                end_user_id=arrival.end_user_id,
                now=now(),
                count_always=count_always,
            )
            stop = time.perf_counter_ns()
        end = time.perf_counter_ns()
        if not admitted:
            raise RuntimeError("the naive admission refused a benchmark message")
        result.ns.append(stop - start)
        result.total_ns.append(end - begin)
        if over_budget(result.total_ns, budget_s):
            break
    return result


def undo_first_of_month(month: date, user_ids: Sequence[int], restore: dict[int, Any]) -> None:
    """Take the sampled first-of-month admissions out of the month's MAU again."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "WITH gone AS (DELETE FROM metering_monthlyactiveuser WHERE month = %s"
            " AND end_user_id = ANY(%s) RETURNING tenant_id)"
            " UPDATE metering_maucounter c SET active = c.active - n.count"
            " FROM (SELECT tenant_id, count(*) FROM gone GROUP BY tenant_id) n"
            " WHERE c.tenant_id = n.tenant_id AND c.month = %s",
            [month, list(user_ids), month],
        )
        cursor.execute(
            "WITH gone AS (DELETE FROM metering_modelactiveuser WHERE month = %s"
            " AND end_user_id = ANY(%s) RETURNING model_name)"
            " UPDATE metering_modelmaucounter c SET active = c.active - n.count"
            " FROM (SELECT model_name, count(*) FROM gone GROUP BY model_name) n"
            " WHERE c.model_name = n.model_name AND c.month = %s",
            [month, list(user_ids), month],
        )
        # Counters of a month that had no users before the samples go again entirely.
        cursor.execute("DELETE FROM metering_maucounter WHERE month = %s AND active = 0", [month])
        cursor.execute(
            "DELETE FROM metering_modelmaucounter WHERE month = %s AND active = 0", [month]
        )
        cursor.execute(
            "UPDATE conversations_enduser e SET counted_month = r.counted_month,"
            " counted_models = r.counted_models"
            " FROM jsonb_to_recordset(%s::jsonb) AS r(id bigint, counted_month date,"
            " counted_models jsonb) WHERE e.id = r.id",
            [
                json.dumps(
                    [
                        {
                            "id": uid,
                            "counted_month": m.isoformat() if m else None,
                            "counted_models": models,
                        }
                        for uid, (m, models) in restore.items()
                    ]
                )
            ],
        )


@dataclass
class Report:
    admission: list[Result] = field(default_factory=list)
    mau: list[Result] = field(default_factory=list)
    dashboard: list[Result] = field(default_factory=list)
    # (latencies, admissions per second) per path and thread count
    concurrency: list[tuple[Result, float]] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def measure(loaded: Loaded, args: argparse.Namespace) -> Report:
    from django.db import connection
    from django.utils import timezone

    from switchboard.conversations.models import EndUser
    from switchboard.licensing.services import effective_limits
    from switchboard.metering import admission, selectors
    from switchboard.metering.models import MauCounter

    report = Report()
    rng = random.Random(args.seed)  # noqa: S311 (samples, not secrets)
    month = loaded.month
    next_month = add_months(month, 1)
    start, end = at_midnight(month), at_midnight(next_month)
    big = loaded.tenant_ids[0]
    small = loaded.tenant_ids[-1]
    samples, warmup, naive_n = args.samples, args.warmup, args.naive_samples
    budget = args.naive_budget

    def now_fn(_index: int = 0) -> datetime:
        return timezone.now()

    # Redis starts empty, as after a restart: the first admission would rebuild the
    # counters from PostgreSQL; time that once, on its own.
    client, _ = admission._redis()
    for key in client.scan_iter(match="switchboard:meter:*", count=1000):
        client.delete(key)
    begin = time.perf_counter()
    admission.counters_rebuild(client)
    report.notes.append(
        f"Redis counters rebuilt from PostgreSQL (empty Redis) in "
        f"{time.perf_counter() - begin:.2f} s"
    )

    # 1. cached path: users who sent a message this month, marked counted as admission
    # leaves them.
    log("admission, cached path …")
    arrivals = active_arrivals(loaded, samples + warmup, rng)
    ids = sorted({a.end_user_id for a in arrivals})
    EndUser.objects.filter(pk__in=ids).update(counted_month=month, counted_models=[MODEL])
    users = EndUser.objects.in_bulk(ids)
    cached = [(a, now_fn) for a in arrivals]
    report.admission.append(
        measure_admission(users, cached, "cached (counted this month)", warmup, report)
    )
    part = Result("cached: of which the Redis script alone", "part")
    for arrival in arrivals[warmup:]:
        limits = effective_limits(arrival.tenant_id)
        begin = time.perf_counter_ns()
        admission._check_rates(
            limits, tenant_id=arrival.tenant_id, end_user_id=arrival.end_user_id, now=now_fn(0)
        )
        part.ns.append(time.perf_counter_ns() - begin)
    report.admission.append(part)
    # The naive baselines run on the biggest tenant's messages: the count is what costs,
    # and it grows with the tenant.
    log("admission, cached path, naive …")
    big_arrivals = [a for a in arrivals[warmup:] if a.tenant_id == big]
    report.admission.append(
        measure_naive_admission(
            big_arrivals[:naive_n],
            now_fn,
            "cached (counted this month)",
            count_always=True,
            budget_s=budget,
        )
    )
    report.admission.append(
        measure_naive_admission(
            big_arrivals[: min(samples, 500)],
            now_fn,
            "cached, naive with known-user shortcut (EXISTS only)",
            count_always=False,
            budget_s=budget,
        )
    )

    # 2a. first of month, this month: users not active yet this month. Committed, then
    # taken out of the month's MAU again.
    log("admission, first-of-month path (this month) …")
    taken: set[int] = set()
    fresh_ids = inactive_users(loaded, samples + warmup, rng, taken)
    fresh = EndUser.objects.in_bulk(fresh_ids)
    restore = {uid: (fresh[uid].counted_month, list(fresh[uid].counted_models)) for uid in fresh}
    first_label = "first of month (this month, users not yet active)"
    try:
        report.admission.append(
            measure_admission(
                fresh,
                [(Arrival(str(fresh[uid].tenant_id), uid), now_fn) for uid in fresh_ids],
                first_label,
                warmup,
                report,
            )
        )
    finally:
        undo_first_of_month(month, fresh_ids, restore)
    log("admission, first-of-month path (this month), naive …")
    big_fresh = [Arrival(big, uid) for uid in fresh_ids if str(fresh[uid].tenant_id) == big]
    report.admission.append(
        measure_naive_admission(
            big_fresh[:naive_n], now_fn, first_label, count_always=True, budget_s=budget
        )
    )

    # 2b. first of month, next month: every user is new, the month's tables start empty.
    log("admission, first-of-month path (next month) …")
    distinct = list(dict.fromkeys(a.end_user_id for a in arrivals))
    rng.shuffle(distinct)
    moved = distinct[: samples + warmup]
    base = at_midnight(next_month) + timedelta(hours=1)

    def next_month_now(i: int) -> datetime:
        return base + timedelta(milliseconds=i)

    def movers() -> tuple[dict[int, Any], dict[int, Any], list[tuple[Arrival, Any]]]:
        loaded_users = EndUser.objects.in_bulk(moved)
        before = {
            u: (loaded_users[u].counted_month, list(loaded_users[u].counted_models)) for u in moved
        }
        work = [(Arrival(str(loaded_users[u].tenant_id), u), next_month_now) for u in moved]
        return loaded_users, before, work

    moving, restore, work = movers()
    try:
        report.admission.append(
            measure_admission(
                moving,
                work,
                "first of month (next month, month starts empty)",
                min(warmup, max(0, len(moved) - 1)),
            )
        )
    finally:
        undo_first_of_month(next_month, moved, restore)

    # 2c. the same from several threads at once: every first-of-month admission in the
    # installation upserts one model counter row and holds its lock until it commits.
    for threads in sorted({1, args.threads}):
        log(f"admission, {threads} thread(s) …")
        result, rate = measure_concurrent(users, cached, "cached", threads)
        report.concurrency.append((result, rate))
        moving, restore, work = movers()
        try:
            result, rate = measure_concurrent(moving, work, "first of month (next)", threads)
            report.concurrency.append((result, rate))
        finally:
            undo_first_of_month(next_month, moved, restore)

    # 3. current MAU.
    log("current MAU reads …")

    def mau_orm() -> int:
        return MauCounter.objects.get(pk=(big, month)).active

    def mau_sql() -> int:
        return int(
            one_row(
                "SELECT active FROM metering_maucounter WHERE tenant_id = %s AND month = %s",
                [big, month],
            )[0]
        )

    def mau_selector() -> int:
        return selectors.mau_current(big, month=month).active

    for label, fn in (
        ("MauCounter.objects.get(pk=…)", mau_orm),
        ("raw SQL primary-key SELECT", mau_sql),
        ("selectors.mau_current()", mau_selector),
    ):
        ns, value = timed(fn, samples, warmup)
        report.mau.append(Result(f"{label}, biggest tenant", "ours", ns))
    counter_value = value
    for label, tenant in (("biggest tenant", big), ("smallest tenant", small)):
        log(f"current MAU, naive COUNT(DISTINCT), {label} …")
        ns, naive_value = timed(
            lambda t=tenant: one_row(_NAIVE_MAU_SQL, [t, start, end])[0], naive_n, 1, budget
        )
        report.mau.append(Result(f"COUNT(DISTINCT) over the ledger, {label}", "naive", ns))
        if tenant == big:
            same = int(naive_value) == int(counter_value)
            report.checks.append(
                f"biggest tenant's MAU: counter {counter_value:,}, COUNT(DISTINCT) "
                f"{int(naive_value):,}: {'equal' if same else 'DIFFERENT'}"
            )

    # 4. the month's dashboard.
    log("dashboard month query …")
    dash_n = min(samples, 1000)

    def dash_selector() -> list[Any]:
        return selectors.usage_series(big, period="day", start=start, end=end)

    def dash_sql() -> list[tuple[Any, ...]]:
        return all_rows(_OURS_DASHBOARD_SQL, [big, start, end])

    ns, series = timed(dash_selector, dash_n, min(warmup, 50))
    report.dashboard.append(Result("selectors.usage_series(period='day')", "ours", ns))
    ns, ours_rows = timed(dash_sql, dash_n, min(warmup, 50))
    report.dashboard.append(Result("raw SQL over the day rollups", "ours", ns))
    log("dashboard month query, naive …")
    ns, naive_rows = timed(
        lambda: all_rows(_NAIVE_DASHBOARD_SQL, [big, start, end]), naive_n, 1, budget
    )
    report.dashboard.append(Result("GROUP BY day over the ledger", "naive", ns))
    same = len(ours_rows) == len(naive_rows) and all(
        int(a[1]) == int(b[1])
        and int(a[2]) == int(b[2])
        and abs(float(a[3]) - float(b[3])) < 1e-6 * max(1.0, abs(float(b[3])))
        for a, b in zip(ours_rows, naive_rows, strict=False)
    )
    report.checks.append(
        f"dashboard: {len(series)} days from the rollups, {len(naive_rows)} from the ledger; "
        f"requests, tokens and mean TTFT per day {'equal' if same else 'DIFFERENT'}"
    )
    connection.close()
    return report


def storage(loaded: Loaded) -> tuple[list[list[str]], list[str]]:
    rows: list[list[str]] = []
    notes: list[str] = []
    counts = {
        "metering_monthlyactiveuser": "user-months (tenant)",
        "metering_modelactiveuser": "user-months (model)",
        "metering_usagerecord": "messages",
        "conversations_enduser": "end users",
    }
    for name, unit in counts.items():
        # `name` is one of the constants above.
        (n,) = one_row(f"SELECT count(*) FROM {name}", [])  # noqa: S608
        heap, indexes, total = one_row(
            "SELECT pg_relation_size(%s::regclass) + pg_relation_size(%s::regclass, 'fsm')"
            " + pg_relation_size(%s::regclass, 'vm'), pg_indexes_size(%s::regclass),"
            " pg_total_relation_size(%s::regclass)",
            [name] * 5,
        )
        per = total / n if n else float("nan")
        rows.append(
            [
                name,
                f"{int(n):,} {unit}",
                f"{heap / 2**20:,.0f}",
                f"{indexes / 2**20:,.0f}",
                f"{total / 2**20:,.0f}",
                f"{per:,.1f}",
                f"{heap / n:,.1f}" if n else "–",
            ]
        )
    per_index = all_rows(
        "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) FROM pg_index"
        " WHERE indrelid = 'metering_monthlyactiveuser'::regclass ORDER BY 1",
        [],
    )
    (mau_rows,) = one_row("SELECT count(*) FROM metering_monthlyactiveuser", [])
    notes.append(
        "metering_monthlyactiveuser indexes, bytes per row: "
        + ", ".join(f"{name} {size / mau_rows:.1f}" for name, size in per_index)
    )
    months = all_rows(
        "SELECT month, sum(active) FROM metering_maucounter GROUP BY month ORDER BY month", []
    )
    notes.append(
        "MAU per month (all tenants): "
        + ", ".join(f"{m:%Y-%m} {int(a):,}" for m, a in months)
        + f"; messages per month: {', '.join(f'{n:,}' for n in loaded.scale.messages_per_month())}"
    )
    notes.append(grown_mau_size(loaded))
    return rows, notes


GROWN_ROWS = 1_000_000


def grown_mau_size(loaded: Loaded) -> str:
    """Bytes per row of MonthlyActiveUser rows inserted one by one in arrival (random)
    order, as admission writes them, rather than bulk-loaded with indexes built after."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMPORARY TABLE bench_mau_grown"
            " (LIKE metering_monthlyactiveuser INCLUDING INDEXES) ON COMMIT DROP"
        )
        cursor.execute(
            "INSERT INTO bench_mau_grown SELECT * FROM (SELECT * FROM"
            " metering_monthlyactiveuser WHERE month = %s LIMIT %s) AS taken ORDER BY random()",
            [loaded.month, GROWN_ROWS],
        )
        rows = cursor.rowcount
        cursor.execute(
            "SELECT pg_total_relation_size('bench_mau_grown'),"
            " pg_relation_size('bench_mau_grown'), pg_indexes_size('bench_mau_grown')"
        )
        total, heap, indexes = cursor.fetchone()
    return (
        f"metering_monthlyactiveuser grown row by row in random order ({rows:,} rows of "
        f"{loaded.month:%Y-%m}, as admission inserts them): {total / rows:.1f} bytes per "
        f"user-month ({heap / rows:.1f} heap, {indexes / rows:.1f} indexes)"
    )


# --- report ---------------------------------------------------------------------------------


def _proc_field(path: str, name: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == name:
                return value.strip()
    except OSError:
        pass
    return "?"


def machine() -> str:
    cpu = _proc_field("/proc/cpuinfo", "model name")
    memory_kb = _proc_field("/proc/meminfo", "MemTotal").split()[0]
    memory = f"{int(memory_kb) / 2**20:.0f} GiB" if memory_kb.isdigit() else "?"
    (version,) = one_row("SHOW server_version", [])
    settings = {
        name: one_row(f"SHOW {name}", [])[0]
        for name in ("shared_buffers", "work_mem", "effective_cache_size", "max_wal_size")
    }
    return (
        f"{os.cpu_count()} vCPU ({cpu}), {memory} RAM, load average "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())} at the end; PostgreSQL {version} "
        f"with its default settings ({', '.join(f'{k} {v}' for k, v in settings.items())}); "
        f"Python {host_platform.python_version()}"
    )


def print_report(loaded: Loaded, report: Report, args: argparse.Namespace) -> None:
    ours_by_label: dict[str, Result] = {}
    print()
    print(f"Command: `{command_line()}`")
    print(f"Machine: {machine()}")
    print(
        f"Data: {loaded.scale.users:,} end users, {loaded.scale.messages:,} messages, "
        f"{loaded.scale.tenants} tenants (users: "
        f"{', '.join(f'{n:,}' for n in loaded.users_per_tenant)}); loaded "
        f"{loaded.loaded_at} in {loaded.load_s.get('total', float('nan')):,.0f} s"
    )
    print()
    print("Load (seconds):")
    print(table(["step", "s"], [[k, f"{v:,.1f}"] for k, v in loaded.load_s.items()]))

    print()
    print("1-2. Admission per message (ms). 'admit()' is the call alone, inside the")
    print("transaction; '+ COMMIT' is the whole `with transaction.atomic():` block.")
    rows = []
    for r in report.admission:
        rows.append(
            [
                r.label,
                r.variant,
                f"{len(r.ns):,}",
                fmt_ms(r.p(50)),
                fmt_ms(r.p(99)),
                fmt_ms(r.p(50, total=True)),
                fmt_ms(r.p(99, total=True)),
            ]
        )
        if r.variant == "ours":
            ours_by_label[r.label] = r
    print(
        table(
            ["path", "variant", "samples", "p50", "p99", "+ COMMIT p50", "+ COMMIT p99"],
            rows,
        )
    )
    ratio_rows = []
    for r in report.admission:
        if r.variant != "naive":
            continue
        key = r.label.split(", naive")[0]
        ours = ours_by_label.get(key) or ours_by_label.get("cached (counted this month)")
        if ours is None:
            continue
        ratio_rows.append(
            [
                r.label,
                fmt_ratio(r.p(50), ours.p(50)),
                fmt_ratio(r.p(99), ours.p(99)),
                fmt_ratio(r.p(50, total=True), ours.p(50, total=True)),
            ]
        )
    print()
    print(table(["naive / ours", "p50", "p99", "+ COMMIT p50"], ratio_rows))

    if report.concurrency:
        print()
        print("Admission from several threads at once (each admission its own committed")
        print("transaction; latency of the whole block, ms):")
        print(
            table(
                ["path, threads", "admissions", "admissions/s", "p50", "p99", "lock waits"],
                [
                    [
                        r.label,
                        f"{len(r.total_ns):,}",
                        f"{rate:,.0f}",
                        fmt_ms(r.p(50, total=True)),
                        fmt_ms(r.p(99, total=True)),
                        r.note,
                    ]
                    for r, rate in report.concurrency
                ],
            )
        )

    for title, results in (
        ("3. Current MAU read (ms)", report.mau),
        ("4. Dashboard: one month per day, biggest tenant (ms)", report.dashboard),
    ):
        print()
        print(title)
        ours = next(r for r in results if r.variant == "ours")
        print(
            table(
                ["query", "variant", "samples", "p50", "p99", "naive / ours p50"],
                [
                    [
                        r.label,
                        r.variant,
                        f"{len(r.ns):,}",
                        fmt_ms(r.p(50)),
                        fmt_ms(r.p(99)),
                        fmt_ratio(r.p(50), ours.p(50)) if r.variant == "naive" else "",
                    ]
                    for r in results
                ],
            )
        )

    print()
    print("5. Storage (MiB; bytes per row include the table's indexes)")
    rows, notes = storage(loaded)
    print(
        table(
            ["table", "rows", "heap MiB", "indexes MiB", "total MiB", "bytes/row", "heap B/row"],
            rows,
        )
    )
    print()
    for line in [*notes, *report.notes, *report.checks]:
        print(f"- {line}")


# --- main -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    url = args.database_url
    if args.drop:
        drop_database(url)
        log(f"dropped {_database_name(url)}")
        return
    scale = Scale(args.users, args.messages, args.tenants)
    meta = read_meta(url)
    loaded: Loaded | None = None
    if meta:
        try:
            loaded = Loaded.from_json(meta)
        except (KeyError, TypeError, ValueError):
            log("the database was loaded by another version of this benchmark")
    this_month = month_start(datetime.now(UTC))
    if loaded is not None and (loaded.scale != scale or loaded.month != this_month):
        log("the database holds another scale or month: loading again")
        loaded = None
    if args.reload or loaded is None:
        drop_database(url)
        create_database(url)
        configure_django(url, args.redis_url)
        log(f"loading {scale.users:,} end users and {scale.messages:,} messages into {url}")
        loaded = load(url, scale, args.load_workers)
        write_meta(url, loaded.to_json())
    else:
        log(f"reusing the data loaded {loaded.loaded_at} in {_database_name(url)}")
        configure_django(url, args.redis_url)
    try:
        report = measure(loaded, args)
        print_report(loaded, report, args)
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            drop_database(url)
            log(f"dropped {_database_name(url)} (use --keep to keep it for the next run)")


if __name__ == "__main__":
    main()
