"""Installation-wide counters, kept in Redis: written when work commits, read at scrape.

Why Redis rather than each process's memory: web and worker processes run on many
hosts, and Prometheus scrapes web processes only, so a count kept by the worker that
generated a reply would never be seen. Why not count the ledger at scrape time: a
COUNT over a period's messages costs in proportion to traffic, on every scrape; a hash
increment costs one round trip per event, and a scrape reads a few hashes whose size
is bounded by configuration (tenants x bots x connector kinds x outcomes, endpoints x
buckets), never by traffic or by end users.

Redis keeps nothing on disk: when it restarts every counter starts again from zero,
which Prometheus reads as a counter reset (`rate()` and `increase()` allow for it).
PostgreSQL's ledger stays the record for billing; these numbers are for watching.

Writes are best effort: a Redis outage never fails the work being counted.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Iterable
from functools import cache, lru_cache
from typing import Any

import redis
from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)

PREFIX = "switchboard:metrics:"
MESSAGES = "messages"
INFERENCE = "inference"
TOKENS = "tokens"
DELIVERIES = "deliveries"
REFUSALS = "refusals"
TTFT = "ttft"
LATENCY = "latency"
FAMILIES = (MESSAGES, INFERENCE, TOKENS, DELIVERIES, REFUSALS, TTFT, LATENCY)

# Histogram bucket bounds in seconds: from a warm GPU's first token to the inference
# deadline's order of magnitude.
BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
INF = "+Inf"
SUM = "sum"
COUNT = "count"

# Label values are joined into one hash field; the unit separator cannot occur in a
# name typed into a form, unlike "|" or ":".
SEP = "\x1f"

# Outcome of an inbound message when it is stored, by its status then.
_ADMISSION_OUTCOME = {
    "received": "accepted",
    # Stored already claimed by a caller that asks the pool itself (tenant API).
    "processing": "accepted",
    "refused": "refused",
    # Answered without the model: unsupported content, or a voice turn answered with
    # the reply held from the turn before.
    "replied": "canned",
}

_WARN_EVERY_S = 60.0
_last_warning = 0.0
# After a failed write, skip writes this long: during an outage every message would
# otherwise wait for a timeout. What is skipped is lost, like everything Redis held.
_PAUSE_AFTER_FAILURE_S = 5.0
_paused_until = 0.0


@cache
def client() -> redis.Redis:
    # One connection pool per process, shared by its threads (redis-py's pool is
    # thread-safe and resets itself in a forked child).
    # Short timeouts: increments run on the message path (after commit), where a Redis
    # that does not answer must cost little.
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)


def key(family: str) -> str:
    return f"{PREFIX}{family}"


def field(*labels: object) -> str:
    return SEP.join("" if value is None else str(value) for value in labels)


@lru_cache(maxsize=8192)
def connector_labels(connector_id: str) -> tuple[str, str]:
    """(bot id, connector kind) of a connector. Neither changes over a connector's life,
    so each process asks the database once per connector."""
    from switchboard.bots.models import Connector

    if not connector_id:
        return "", "none"
    row = Connector.objects.filter(pk=connector_id).values_list("bot_id", "kind").first()
    if row is None:
        return "", "unknown"
    return str(row[0]), str(row[1])


def _warn(what: str) -> None:
    global _last_warning
    now = time.monotonic()
    # Redis being down would otherwise log once per message.
    if now - _last_warning >= _WARN_EVERY_S:
        _last_warning = now
        logger.warning("metrics: could not count %s in Redis (counting resumes with Redis)", what)


def _increment(what: str, increments: Iterable[tuple[str, str, float]]) -> None:
    global _paused_until
    if time.monotonic() < _paused_until:
        return
    try:
        with client().pipeline(transaction=False) as pipe:
            for family, name, amount in increments:
                if isinstance(amount, int):
                    pipe.hincrby(key(family), name, amount)
                else:
                    pipe.hincrbyfloat(key(family), name, amount)
            pipe.execute()
    except Exception:
        _paused_until = time.monotonic() + _PAUSE_AFTER_FAILURE_S
        _warn(what)


def _on_commit(what: str, build: Any, using: str | None) -> None:
    def run() -> None:
        try:
            increments = list(build())
        except Exception:
            # Label lookup failed (database gone mid-way): a metric is not worth an error.
            _warn(what)
            return
        _increment(what, increments)

    # Counted only once durable: a rolled-back message never happened.
    transaction.on_commit(run, using=using)


# --- writers (called from model signals and one admission hook) -------------------------


def message_stored(message: Any, *, using: str | None = None) -> None:
    """An inbound message was stored; count it by its admission outcome."""
    _on_commit("a message", _message_builder(message), using)


def _message_builder(message: Any) -> Any:
    tenant_id = str(message.tenant_id)
    connector_id = str(message.connector_id or "")
    outcome = _ADMISSION_OUTCOME.get(message.status, message.status)

    def build() -> Iterable[tuple[str, str, float]]:
        bot, kind = connector_labels(connector_id)
        yield MESSAGES, field(tenant_id, bot, kind, outcome), 1

    return build


def usage_recorded(record: Any, *, using: str | None = None) -> None:
    """An inference call was appended to the ledger: its outcome, tokens and timings."""
    _on_commit("usage", _usage_builder(record), using)


def _usage_builder(record: Any) -> Any:
    tenant_id = str(record.tenant_id)
    connector_id = str(record.connector_id or "")
    bot_id = str(record.bot_id or "")
    endpoint = record.endpoint or "none"
    outcome = record.outcome
    prompt, completion = int(record.prompt_tokens or 0), int(record.completion_tokens or 0)
    ttft_ms, latency_ms = record.ttft_ms, record.latency_ms

    def build() -> Iterable[tuple[str, str, float]]:
        bot, kind = connector_labels(connector_id)
        bot = bot_id or bot
        yield INFERENCE, field(tenant_id, bot, kind, outcome), 1
        if prompt:
            yield TOKENS, field(tenant_id, bot, kind, "prompt"), prompt
        if completion:
            yield TOKENS, field(tenant_id, bot, kind, "completion"), completion
        yield from _observation(TTFT, endpoint, ttft_ms)
        yield from _observation(LATENCY, endpoint, latency_ms)

    return build


def stored_increments(message: Any, record: Any) -> list[tuple[str, str, float]]:
    """What `message_stored` and `usage_recorded` would add, for a caller that sums many
    calls' increments and writes them at once (`increment_many`)."""
    return [*_message_builder(message)(), *_usage_builder(record)()]


def increment_many(increments: Iterable[tuple[str, str, float]]) -> None:
    _increment("a batch", increments)


def delivery_attempted(attempt: Any, *, using: str | None = None) -> None:
    tenant_id = str(attempt.tenant_id)
    connector_id = str(attempt.connector_id or "")
    outcome = attempt.outcome

    def build() -> Iterable[tuple[str, str, float]]:
        bot, kind = connector_labels(connector_id)
        yield DELIVERIES, field(tenant_id, bot, kind, outcome), 1

    _on_commit("a delivery", build, using)


def refusal(*, tenant_id: uuid.UUID | str, connector_kind: str, reason: str) -> None:
    """Admission refused a message. Counted at once, not on commit: a refusal answered
    with an HTTP error stores nothing and rolls its transaction back, yet it happened."""
    _increment("a refusal", [(REFUSALS, field(tenant_id, connector_kind, reason), 1)])


def _observation(family: str, endpoint: str, value_ms: float | None) -> Iterable[tuple]:
    if value_ms is None or math.isnan(value_ms):
        return
    seconds = max(0.0, value_ms / 1000.0)
    # One bucket field per observation; the reader makes them cumulative.
    bucket = next((str(i) for i, bound in enumerate(BUCKETS_S) if seconds <= bound), INF)
    yield family, field(endpoint, bucket), 1
    yield family, field(endpoint, SUM), seconds
    yield family, field(endpoint, COUNT), 1


# --- readers (the scrape) ---------------------------------------------------------------


def read_all() -> dict[str, dict[tuple[str, ...], float]]:
    """Every family's fields, split back into label tuples. Raises on a Redis error."""
    with client().pipeline(transaction=False) as pipe:
        for family in FAMILIES:
            pipe.hgetall(key(family))
        results = pipe.execute()
    out: dict[str, dict[tuple[str, ...], float]] = {}
    for family, raw in zip(FAMILIES, results, strict=True):
        out[family] = {tuple(name.decode().split(SEP)): float(value) for name, value in raw.items()}
    return out
