"""Installation-wide metrics, computed at scrape time from Redis and PostgreSQL.

Whichever web process is scraped answers for the whole installation, since the work
happens in many processes on many hosts. What one scrape costs, by design:

- Redis: one pipeline of HGETALLs over the counter hashes (see `counters`), one of
  LLENs over the Celery queues, and one HGETALL per endpoint for circuit states.
- PostgreSQL, each query bounded by configuration, none by traffic or end users:
  open work by status (the partial index `message_open_work` covers exactly the open
  statuses, so it reads the backlog, not the table); this month's MAU counters (one row
  per tenant); this month's model MAU counters (one row per model); the pool's
  endpoints; and primary-key lookups of the tenants and bots the counters name.

Labels are bounded the same way: `tenant` (slug), `bot` (id; `switchboard_bot_info`
carries its name), `connector_kind`, `outcome`/`reason`/`status` from fixed sets,
`endpoint` (pool servers), `queue` (three). No label names an end user or a message.

This reads across tenants on purpose: it is the operator's view of the installation,
behind the metrics token, never a tenant's.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator

from django.db.models import Count
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from inference.breaker import BreakerState
from switchboard.observability import counters

logger = logging.getLogger(__name__)

# Celery's queues (settings: `app.conf.task_queues`).
QUEUES = ("realtime", "chat", "default")
# Kombu's Redis transport keeps a queue's prioritised messages in sibling lists named
# queue + "\x06\x16" + step; unprioritised ones in the queue's own list.
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)
# Messages a worker has taken but not acknowledged (running, or waiting for a countdown).
_UNACKED_KEY = "unacked"

OPEN_STATUSES = ("received", "processing", "pending")

Labels = tuple[str, ...]


class PlatformCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "switchboard_metrics_source_up",
            "Whether this scrape could read a source of the platform metrics (1) or not (0).",
            labels=["source"],
        )
        yield from self._guarded("redis", up, self._from_redis)
        yield from self._guarded("database", up, self._from_database)
        yield up

    def _guarded(
        self, source: str, up: GaugeMetricFamily, produce: Callable[[], list[Metric]]
    ) -> Iterable[Metric]:
        # One source down must not cost the other's metrics, nor fail the scrape.
        try:
            metrics = produce()
        except Exception:
            logger.warning("metrics: could not read %s", source, exc_info=True)
            up.add_metric([source], 0)
            return []
        up.add_metric([source], 1)
        return metrics

    # --- Redis: counters and queues -------------------------------------------------

    def _from_redis(self) -> list[Metric]:
        data = counters.read_all()
        names = _Names.for_counters(data)
        out: list[Metric] = [
            _counter(
                "switchboard_messages_received",
                "Inbound messages stored, by admission outcome: accepted (a reply is "
                "generated), refused (licence, quota, rate limit), canned (answered "
                "without the model).",
                ["tenant", "bot", "connector_kind", "outcome"],
                names.relabel(data[counters.MESSAGES]),
            ),
            _counter(
                "switchboard_inference_requests",
                "Inference calls made for replies, by outcome (ok, partial, busy, error).",
                ["tenant", "bot", "connector_kind", "outcome"],
                names.relabel(data[counters.INFERENCE]),
            ),
            _counter(
                "switchboard_tokens",
                "Tokens used by inference calls, by type (prompt, completion).",
                ["tenant", "bot", "connector_kind", "type"],
                names.relabel(data[counters.TOKENS]),
            ),
            _counter(
                "switchboard_deliveries",
                "Reply delivery attempts, by outcome (delivered, retrying, failed).",
                ["tenant", "bot", "connector_kind", "outcome"],
                names.relabel(data[counters.DELIVERIES]),
            ),
            _counter(
                "switchboard_admission_refusals",
                "Messages admission refused, by reason (mau_limit, rate_limited, "
                "quota_exhausted, connector_not_licensed), stored or answered 429.",
                ["tenant", "connector_kind", "reason"],
                names.relabel(data[counters.REFUSALS], bot=False),
            ),
            _histogram(
                "switchboard_inference_ttft_seconds",
                "Time to the first token of inference calls, by pool endpoint.",
                data[counters.TTFT],
            ),
            _histogram(
                "switchboard_inference_latency_seconds",
                "Whole duration of inference calls, by pool endpoint.",
                data[counters.LATENCY],
            ),
            names.bot_info(),
        ]
        out.extend(_queues())
        return out

    # --- PostgreSQL: state ----------------------------------------------------------

    def _from_database(self) -> list[Metric]:
        from switchboard.conversations.models import Message
        from switchboard.metering.models import MauCounter, ModelMauCounter
        from switchboard.metering.selectors import month_start

        month = month_start()
        open_work = GaugeMetricFamily(
            "switchboard_messages_open",
            "Messages waiting for work now: received (queued for a reply), processing "
            "(being generated), pending (reply waiting for delivery).",
            labels=["status"],
        )
        counts = {
            row["status"]: row["n"]
            for row in Message.objects.filter(status__in=OPEN_STATUSES)
            .order_by()
            .values("status")
            .annotate(n=Count("pk"))
        }
        for status in OPEN_STATUSES:
            open_work.add_metric([status], counts.get(status, 0))

        mau = GaugeMetricFamily(
            "switchboard_mau",
            "Monthly active users of each tenant this calendar month (UTC).",
            labels=["tenant"],
        )
        over = GaugeMetricFamily(
            "switchboard_mau_over_limit",
            "Of this month's MAU, those counted beyond the tenant's licence (soft limit).",
            labels=["tenant"],
        )
        for slug, active, over_limit in MauCounter.objects.filter(month=month).values_list(
            "tenant__slug", "active", "over_limit"
        ):
            mau.add_metric([slug], active)
            over.add_metric([slug], over_limit)

        model_mau = GaugeMetricFamily(
            "switchboard_model_mau",
            "Monthly active users of each served model this month, installation-wide "
            "(what the model's own licence counts).",
            labels=["model"],
        )
        for model, active in ModelMauCounter.objects.filter(month=month).values_list(
            "model_name", "active"
        ):
            model_mau.add_metric([model], active)
        return [open_work, mau, over, model_mau, *_pool()]


def _pool() -> list[Metric]:
    from switchboard.pool.models import InferenceEndpoint
    from switchboard.pool.runtime import breaker_reports

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ("endpoint",)) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"switchboard_pool_endpoint_{name}", doc, labels=list(labels))

    enabled = gauge("enabled", "Whether the endpoint is enabled by the operator.")
    draining = gauge("draining", "Whether the endpoint is draining (takes no new requests).")
    healthy = gauge("healthy", "The last health check's verdict; absent before the first.")
    running = gauge("requests_running", "Requests running on the server at the last check.")
    waiting = gauge("requests_waiting", "Requests queued on the server at the last check.")
    kv_cache = gauge("kv_cache_usage_ratio", "KV cache in use (0-1) at the last check.")
    checked = gauge("last_check_timestamp_seconds", "When the endpoint was last checked.")
    circuit = gauge(
        "circuit_workers",
        "Worker processes that see the endpoint's circuit breaker in each state.",
        ("endpoint", "state"),
    )
    rows = list(
        InferenceEndpoint.objects.values_list(
            "name",
            "enabled",
            "draining",
            "healthy",
            "running",
            "waiting",
            "kv_cache_usage",
            "checked_at",
        )
    )
    for name, is_enabled, is_draining, ok, run, wait, kv, checked_at in rows:
        enabled.add_metric([name], float(is_enabled))
        draining.add_metric([name], float(is_draining))
        if ok is not None:
            healthy.add_metric([name], float(ok))
        for family, value in ((running, run), (waiting, wait), (kv_cache, kv)):
            if value is not None:
                family.add_metric([name], value)
        if checked_at is not None:
            checked.add_metric([name], checked_at.timestamp())
    # Circuit states live in Redis; unreadable, they are left out rather than failing
    # the database half of the scrape.
    reports = breaker_reports([row[0] for row in rows]) if rows else {}
    for name, states in reports.items():
        for state in BreakerState:
            circuit.add_metric([name, state.value], states.get(state.value, 0))
    return [enabled, draining, healthy, running, waiting, kv_cache, checked, circuit]


def _queues() -> list[Metric]:
    length = GaugeMetricFamily(
        "switchboard_queue_length",
        "Tasks waiting in each Celery queue on the broker.",
        labels=["queue"],
    )
    unacked = GaugeMetricFamily(
        "switchboard_queue_unacked",
        "Tasks taken by workers and not yet acknowledged (running, or held for a "
        "countdown such as a delivery retry), all queues together.",
    )
    client = counters.client()
    with client.pipeline(transaction=False) as pipe:
        for queue in QUEUES:
            pipe.llen(queue)
            for step in _PRIORITY_STEPS:
                pipe.llen(f"{queue}{_PRIORITY_SEP}{step}")
        pipe.hlen(_UNACKED_KEY)
        results = pipe.execute()
    per_queue = 1 + len(_PRIORITY_STEPS)
    for index, queue in enumerate(QUEUES):
        length.add_metric([queue], sum(results[index * per_queue : (index + 1) * per_queue]))
    unacked.add_metric([], results[-1])
    return [length, unacked]


def _counter(
    name: str, doc: str, labels: list[str], values: dict[Labels, float]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for label_values, value in sorted(values.items()):
        family.add_metric(list(label_values), value)
    return family


def _histogram(name: str, doc: str, fields: dict[Labels, float]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["endpoint"])
    per_endpoint: dict[str, dict[str, float]] = defaultdict(dict)
    for (endpoint, part), value in fields.items():
        per_endpoint[endpoint][part] = value
    for endpoint, parts in sorted(per_endpoint.items()):
        cumulative = 0.0
        buckets: list[tuple[str, float]] = []
        for index, bound in enumerate(counters.BUCKETS_S):
            cumulative += parts.get(str(index), 0.0)
            buckets.append((_bound(bound), cumulative))
        cumulative += parts.get(counters.INF, 0.0)
        buckets.append(("+Inf", cumulative))
        family.add_metric([endpoint], buckets, parts.get(counters.SUM, 0.0))
    return family


def _bound(value: float) -> str:
    return repr(float(value))


class _Names:
    """Tenant slugs and bot names for the ids the counters are kept under."""

    def __init__(self, tenants: dict[str, str], bots: dict[str, tuple[str, str]]) -> None:
        self.tenants = tenants
        self.bots = bots

    @classmethod
    def for_counters(cls, data: dict[str, dict[Labels, float]]) -> _Names:
        from switchboard.bots.models import Bot
        from switchboard.tenants.models import Tenant

        tenant_ids: set[str] = set()
        bot_ids: set[str] = set()
        for family in (counters.MESSAGES, counters.INFERENCE, counters.TOKENS, counters.DELIVERIES):
            for labels in data[family]:
                tenant_ids.add(labels[0])
                bot_ids.add(labels[1])
        tenant_ids.update(labels[0] for labels in data[counters.REFUSALS])
        tenants = {
            str(pk): slug
            for pk, slug in Tenant.objects.filter(pk__in=_uuids(tenant_ids)).values_list(
                "pk", "slug"
            )
        }
        bots = {
            str(pk): (name, str(tenant_id))
            for pk, name, tenant_id in Bot.objects.filter(pk__in=_uuids(bot_ids)).values_list(
                "pk", "name", "tenant_id"
            )
        }
        return cls(tenants, bots)

    def tenant(self, tenant_id: str) -> str:
        # A deleted tenant keeps its counts under its id.
        return self.tenants.get(tenant_id, tenant_id)

    def relabel(self, values: dict[Labels, float], *, bot: bool = True) -> dict[Labels, float]:
        out: dict[Labels, float] = defaultdict(float)
        for labels in values:
            if len(labels) != (4 if bot else 3):
                continue  # written by another version; not worth failing the scrape
            out[(self.tenant(labels[0]), *labels[1:])] += values[labels]
        return out

    def bot_info(self) -> GaugeMetricFamily:
        info = GaugeMetricFamily(
            "switchboard_bot_info",
            "1 for every bot named by the counters' `bot` label: its name and tenant.",
            labels=["tenant", "bot", "bot_name"],
        )
        for bot_id, (name, tenant_id) in sorted(self.bots.items()):
            info.add_metric([self.tenant(tenant_id), bot_id, name], 1)
        return info


def _uuids(values: Iterable[str]) -> list[uuid.UUID]:
    out = []
    for value in values:
        try:
            out.append(uuid.UUID(value))
        except ValueError:
            continue
    return out
