"""Admission: may this message be answered? Licence, rate limits, token quota, MAU.

Runs inside the ingress transaction that stores the message, right after the end user
row is loaded, so everything it writes commits or rolls back with the message.

Costs on the hot path:
- limits: a per-process cache (`licensing.services.effective_limits`);
- rate limits, token quota and the dashboards' daily-actives sketch: one Redis round
  trip (a Lua script, so the check and the increments are one atomic step);
- MAU: nothing when the end user row says it was counted this month already; else, once
  per end user per month, a few statements in the message's own transaction (see
  `_count_mau`).

Redis holds only what can be rebuilt from PostgreSQL: when its marker key is missing (a
restart, a flush), the next admission rebuilds the rate windows from the stored inbound
messages and the month's token use from the usage rollups and ledger.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Sum

from switchboard.bots.models import Connector
from switchboard.conversations.models import EndUser, Message
from switchboard.licensing import replies
from switchboard.licensing.limits import Limits
from switchboard.licensing.services import effective_limits
from switchboard.metering import alerts

logger = logging.getLogger(__name__)

_PREFIX = "switchboard:meter"
READY_KEY = f"{_PREFIX}:ready"
_REBUILD_LOCK = f"{_PREFIX}:rebuilding"
_WINDOW_S = 60
# Daily-active sketches outlive the rolling 30-day figure that reads them.
_DAU_TTL_S = 35 * 86400
_QUOTA_TTL_S = 40 * 86400


@dataclass(frozen=True)
class Decision:
    admitted: bool
    reason: str = ""  # one of the `licensing.replies` reasons when refused
    retry_after_s: float | None = None
    first_of_month: bool = False  # this message made the user count in this month's MAU
    over_limit: bool = False  # soft mode: served beyond the MAU limit

    @classmethod
    def refused(cls, reason: str, retry_after_s: float | None = None) -> Decision:
        return cls(admitted=False, reason=reason, retry_after_s=retry_after_s)


ADMITTED = Decision(admitted=True)


def month_of(moment: datetime) -> date:
    utc = moment.astimezone(UTC)
    return date(utc.year, utc.month, 1)


def admit(
    *, tenant_id: Any, end_user: EndUser, connector_kind: str, model_name: str, now: datetime
) -> Decision:
    """Decide on one inbound message. Must run inside the transaction storing it."""
    limits = effective_limits(tenant_id)
    # The console's test chat is the tenant's own staff trying a bot: not a channel a
    # licence sells, nor end users. Its messages are rate-limited and their tokens
    # metered like any others, but the kind is never refused and its users are never
    # counted in MAU (the tenant's or the model's).
    console = connector_kind == Connector.Kind.CONSOLE
    if not console and not limits.allows_connector(connector_kind):
        return Decision.refused(replies.CONNECTOR_NOT_LICENSED)
    decision = ADMITTED
    month = month_of(now)
    counted = end_user.counted_month == month and model_name in (end_user.counted_models or [])
    if not console and not counted:
        # MAU before the rate limits: a new user refused at the MAU limit must not use
        # up rate-window room or show in the daily actives. (A counted user the rate
        # limit then refuses did write to the bot this month: active, if throttled.)
        decision = _count_mau(limits, tenant_id, end_user, model_name, month)
        if not decision.admitted:
            return decision
    limited = _check_rates(limits, tenant_id=tenant_id, end_user_id=end_user.pk, now=now)
    return limited if limited is not None else decision


# --- MAU --------------------------------------------------------------------------------


def _count_mau(
    limits: Limits, tenant_id: Any, end_user: EndUser, model_name: str, month: date
) -> Decision:
    """Count the user in this month's MAU (tenant and model) exactly once.

    The MonthlyActiveUser insert finds users counted already (ON CONFLICT); a new one
    then bumps the tenant's counter with an upsert whose row lock serialises concurrent
    new users, and in hard mode whose WHERE refuses the bump at the limit, so the count
    can never pass it however many first messages race. A refusal rolls the insert back
    through the savepoint.
    """
    counted_tenant = end_user.counted_month == month
    decision = ADMITTED
    if not counted_tenant:
        decision = _count_tenant(limits, tenant_id, end_user.pk, month)
        if not decision.admitted:
            return decision
    _count_model(model_name, end_user.pk, month)
    models = list(end_user.counted_models or []) if counted_tenant else []
    models.append(model_name)
    EndUser.objects.filter(pk=end_user.pk).update(counted_month=month, counted_models=models)
    end_user.counted_month, end_user.counted_models = month, models
    return decision


def _count_tenant(limits: Limits, tenant_id: Any, end_user_id: int, month: date) -> Decision:
    limit = limits.mau_limit
    hard = limits.enforcement == "hard"
    refused = False
    # The inner atomic is a savepoint: a refusal rolls back the user's row with it.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO metering_monthlyactiveuser (tenant_id, month, end_user_id, over_limit)"
            " VALUES (%s, %s, %s, false) ON CONFLICT DO NOTHING RETURNING 1",
            [tenant_id, month, end_user_id],
        )
        if cursor.fetchone() is None:
            # Counted already (an earlier message whose end user row was not updated,
            # or a concurrent first message): nothing to add.
            return ADMITTED
        row = None
        if not (hard and limit is not None and limit <= 0):
            # NULL: no cap (soft mode, or no MAU limit); the upsert counts regardless.
            cap = limit if hard else None
            cursor.execute(
                "INSERT INTO metering_maucounter (tenant_id, month, active, over_limit,"
                " refused) VALUES (%s, %s, 1, 0, 0) ON CONFLICT (tenant_id, month) DO UPDATE"
                " SET active = metering_maucounter.active + 1"
                " WHERE %s::bigint IS NULL OR metering_maucounter.active < %s::bigint"
                " RETURNING active",
                [tenant_id, month, cap, cap],
            )
            row = cursor.fetchone()
        if row is None:
            refused = True
            transaction.set_rollback(True)
    if refused:
        with connection.cursor() as cursor:
            _count_refusal(cursor, tenant_id, month)
        return Decision.refused(replies.MAU_LIMIT)
    active = int(row[0])
    over = limit is not None and active > limit
    if over:
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE metering_maucounter SET over_limit = over_limit + 1"
                " WHERE tenant_id = %s AND month = %s",
                [tenant_id, month],
            )
            cursor.execute(
                "UPDATE metering_monthlyactiveuser SET over_limit = true"
                " WHERE tenant_id = %s AND month = %s AND end_user_id = %s",
                [tenant_id, month, end_user_id],
            )
    if limit:
        alerts.tenant_mau_crossed(tenant_id=tenant_id, month=month, active=active, limit=limit)
    return Decision(admitted=True, first_of_month=True, over_limit=over)


def _count_refusal(cursor: Any, tenant_id: Any, month: date) -> None:
    cursor.execute(
        "INSERT INTO metering_maucounter (tenant_id, month, active, over_limit, refused)"
        " VALUES (%s, %s, 0, 0, 1) ON CONFLICT (tenant_id, month) DO UPDATE"
        " SET refused = metering_maucounter.refused + 1",
        [tenant_id, month],
    )


def _count_model(model_name: str, end_user_id: int, month: date) -> None:
    """The user's row for the model's MAU rides in the message's transaction (distinct
    keys: no contention); the installation-wide counter, one hot row every tenant's new
    users would queue on, is bumped after commit in a one-statement transaction. Only
    alerts and the operator's view read it, and `model_mau_rebuild` recounts it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO metering_modelactiveuser (model_name, month, end_user_id)"
            " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
            [model_name, month, end_user_id],
        )
        if cursor.fetchone() is None:
            return
    transaction.on_commit(lambda: _bump_model_counter(model_name, month))


def _bump_model_counter(model_name: str, month: date) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO metering_modelmaucounter (model_name, month, active)"
            " VALUES (%s, %s, 1) ON CONFLICT (model_name, month) DO UPDATE"
            " SET active = metering_modelmaucounter.active + 1 RETURNING active",
            [model_name, month],
        )
        active = int(cursor.fetchone()[0])
    alerts.model_mau_crossed(model_name=model_name, month=month, active=active)


def model_mau_rebuild(*, month: date) -> int:
    """Recount every model's counter for the month from its rows."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO metering_modelmaucounter (model_name, month, active)"
            " SELECT model_name, month, count(*) FROM metering_modelactiveuser"
            " WHERE month = %s GROUP BY 1, 2"
            " ON CONFLICT (model_name, month) DO UPDATE SET active = EXCLUDED.active",
            [month],
        )
        return cursor.rowcount


def mau_rebuild(*, tenant_id: Any | None = None, month: date) -> int:
    """Recompute the month's counters from the MonthlyActiveUser rows (the truth)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO metering_maucounter (tenant_id, month, active, over_limit, refused)"
            " SELECT tenant_id, month, count(*), count(*) FILTER (WHERE over_limit), 0"
            " FROM metering_monthlyactiveuser"
            " WHERE month = %s AND (%s::uuid IS NULL OR tenant_id = %s::uuid) GROUP BY 1, 2"
            " ON CONFLICT (tenant_id, month) DO UPDATE SET active = EXCLUDED.active,"
            " over_limit = EXCLUDED.over_limit",
            [month, tenant_id, tenant_id],
        )
        return cursor.rowcount


# --- rate limits, token quota, daily actives (Redis) ------------------------------------

# KEYS: tenant window now, tenant window before, user window now, user window before,
#       quota, daily-actives sketch, ready marker
# ARGV: tenant limit, user limit (0 = none), fraction of the previous window still in
#       the sliding window, quota (0 = none), end user id, window ttl, dau ttl,
#       seconds left in this window
# The sliding window is the usual two-bucket estimate: the previous minute's count
# weighted by how much of it still overlaps the last 60 s, plus this minute's.
_SCRIPT = """
if redis.call('EXISTS', KEYS[7]) == 0 then return {-1, 0} end
local weight = tonumber(ARGV[3])
local function estimate(now_key, before_key)
  local now_count = tonumber(redis.call('GET', now_key) or '0')
  local before_count = tonumber(redis.call('GET', before_key) or '0')
  return now_count + before_count * weight
end
local tenant_limit = tonumber(ARGV[1])
if tenant_limit > 0 and estimate(KEYS[1], KEYS[2]) + 1 > tenant_limit then
  return {1, ARGV[8]}
end
local user_limit = tonumber(ARGV[2])
if user_limit > 0 and estimate(KEYS[3], KEYS[4]) + 1 > user_limit then
  return {2, ARGV[8]}
end
local quota = tonumber(ARGV[4])
if quota > 0 and tonumber(redis.call('GET', KEYS[5]) or '0') >= quota then
  return {3, 0}
end
redis.call('INCR', KEYS[1]); redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('INCR', KEYS[3]); redis.call('EXPIRE', KEYS[3], ARGV[6])
redis.call('PFADD', KEYS[6], ARGV[5]); redis.call('EXPIRE', KEYS[6], ARGV[7])
return {0, 0}
"""

_client_lock = threading.Lock()
_client: redis.Redis | None = None
_script: Any = None


def _redis() -> tuple[redis.Redis, Any]:
    global _client, _script
    with _client_lock:
        if _client is None:
            _client = redis.Redis.from_url(settings.REDIS_URL)
            _script = _client.register_script(_SCRIPT)
        return _client, _script


def redis_reset() -> None:
    """Forget the connection (tests point REDIS_URL elsewhere)."""
    global _client, _script
    with _client_lock:
        _client, _script = None, None


def _window_keys(tenant_id: Any, end_user_id: int, now: datetime) -> tuple[list[str], float]:
    epoch = now.timestamp()
    window = int(epoch // _WINDOW_S)
    elapsed = (epoch - window * _WINDOW_S) / _WINDOW_S
    keys = [
        f"{_PREFIX}:rate:t:{tenant_id}:{window}",
        f"{_PREFIX}:rate:t:{tenant_id}:{window - 1}",
        f"{_PREFIX}:rate:u:{tenant_id}:{end_user_id}:{window}",
        f"{_PREFIX}:rate:u:{tenant_id}:{end_user_id}:{window - 1}",
    ]
    return keys, elapsed


def quota_key(tenant_id: Any, month: date) -> str:
    return f"{_PREFIX}:quota:{tenant_id}:{month:%Y%m}"


def dau_key(tenant_id: Any, day: date) -> str:
    return f"{_PREFIX}:dau:{tenant_id}:{day:%Y%m%d}"


def _check_rates(
    limits: Limits, *, tenant_id: Any, end_user_id: int, now: datetime
) -> Decision | None:
    window_keys, elapsed = _window_keys(tenant_id, end_user_id, now)
    utc = now.astimezone(UTC)
    keys = [*window_keys, quota_key(tenant_id, month_of(now)), dau_key(tenant_id, utc.date())]
    keys.append(READY_KEY)
    args = [
        limits.tenant_messages_per_minute or 0,
        limits.user_messages_per_minute or 0,
        repr(1.0 - elapsed),
        limits.monthly_tokens or 0,
        end_user_id,
        2 * _WINDOW_S,
        _DAU_TTL_S,
        math.ceil((1.0 - elapsed) * _WINDOW_S),
    ]
    try:
        client, script = _redis()
        for _ in range(2):
            code, retry = script(keys=keys, args=args, client=client)
            if code != -1:
                break
            counters_rebuild(client)
        else:
            code = 0
    except redis.RedisError:
        # Redis down: the message is still stored and answered (PostgreSQL holds the
        # MAU); only rate limits and the quota go unchecked until it is back.
        logger.warning("admission: Redis unavailable, rate limits and quota not checked")
        return None
    if code in (1, 2):
        return Decision.refused(replies.RATE_LIMITED, retry_after_s=float(retry) or 1.0)
    if code == 3:
        return Decision.refused(replies.QUOTA_EXHAUSTED)
    return None


def tokens_used(*, tenant_id: Any, tokens: int, at: datetime) -> None:
    """Add a call's tokens to the month's quota counter (after the ledger row commits)."""
    if tokens <= 0:
        return
    try:
        client, _ = _redis()
        if not client.exists(READY_KEY):
            return  # the rebuild will read this call's ledger row
        key = quota_key(tenant_id, month_of(at))
        pipe = client.pipeline()
        pipe.incrby(key, tokens)
        pipe.expire(key, _QUOTA_TTL_S)
        pipe.execute()
    except redis.RedisError:
        logger.warning("admission: Redis unavailable, %d tokens not added to the quota", tokens)


def counters_rebuild(client: redis.Redis | None = None, *, now: datetime | None = None) -> bool:
    """Rebuild every Redis counter admission reads from PostgreSQL. One process does
    it (a lock); the others wait for the marker. Returns True if this call rebuilt."""
    from django.utils import timezone

    client = client or _redis()[0]
    if not client.set(_REBUILD_LOCK, 1, nx=True, ex=60):
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and not client.exists(READY_KEY):
            time.sleep(0.02)
        return False
    try:
        now = now or timezone.now()
        pipe = client.pipeline()
        for key, value, ttl in _rebuilt_counters(now):
            pipe.set(key, value, ex=ttl)
        pipe.set(READY_KEY, int(time.time()))
        pipe.execute()
        logger.warning("admission: Redis counters rebuilt from PostgreSQL")
        return True
    finally:
        client.delete(_REBUILD_LOCK)


def _rebuilt_counters(now: datetime) -> Iterable[tuple[str, int, int]]:
    from switchboard.metering.models import RollupCursor, UsageRecord, UsageRollup

    window = int(now.timestamp() // _WINDOW_S)
    since = datetime.fromtimestamp((window - 1) * _WINDOW_S, tz=UTC)
    inbound = Message.objects.filter(direction=Message.Direction.INBOUND, created_at__gte=since)
    # Refused messages were admitted into no window; everything else was.
    inbound = inbound.exclude(status=Message.Status.REFUSED)
    per_tenant: dict[tuple[Any, int], int] = {}
    per_user: dict[tuple[Any, int, int], int] = {}
    rows = inbound.values_list("tenant_id", "conversation__end_user_id", "created_at")
    for tenant_id, end_user_id, created in rows.iterator():
        w = int(created.timestamp() // _WINDOW_S)
        per_tenant[(tenant_id, w)] = per_tenant.get((tenant_id, w), 0) + 1
        per_user[(tenant_id, end_user_id, w)] = per_user.get((tenant_id, end_user_id, w), 0) + 1
    for (tenant_id, w), count in per_tenant.items():
        yield f"{_PREFIX}:rate:t:{tenant_id}:{w}", count, 2 * _WINDOW_S
    for (tenant_id, user_id, w), count in per_user.items():
        yield f"{_PREFIX}:rate:u:{tenant_id}:{user_id}:{w}", count, 2 * _WINDOW_S

    # Token use this month: the daily rollups up to the cursor, the ledger after it.
    month = month_of(now)
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    cursor = RollupCursor.objects.filter(name="usage").values_list("last_id", flat=True).first()
    last_id = cursor or 0
    used: dict[Any, int] = {}
    rolled = (
        UsageRollup.objects.filter(period="day", bucket__gte=start)
        .values("tenant_id")
        .annotate(tokens=Sum("prompt_tokens") + Sum("completion_tokens"))
    )
    if last_id:
        for row in rolled:
            used[row["tenant_id"]] = used.get(row["tenant_id"], 0) + int(row["tokens"] or 0)
    tail = (
        UsageRecord.objects.filter(id__gt=last_id, created_at__gte=start)
        .values("tenant_id")
        .annotate(tokens=Sum("prompt_tokens") + Sum("completion_tokens"), n=Count("id"))
    )
    for row in tail:
        used[row["tenant_id"]] = used.get(row["tenant_id"], 0) + int(row["tokens"] or 0)
    for tenant_id, tokens in used.items():
        yield quota_key(tenant_id, month), tokens, _QUOTA_TTL_S


# --- dashboards' actives (HyperLogLog, approximate) -------------------------------------


def daily_actives(tenant_id: Any, day: date) -> int:
    """Approximate distinct end users on `day` (UTC); Redis HyperLogLog, ~0.8 % error."""
    return int(_redis()[0].pfcount(dau_key(tenant_id, day)))


def rolling_actives(tenant_id: Any, day: date, days: int = 30) -> int:
    """Approximate distinct end users over the `days` days ending with `day`."""
    keys = [dau_key(tenant_id, day - timedelta(days=i)) for i in range(days)]
    return int(_redis()[0].pfcount(*keys))
