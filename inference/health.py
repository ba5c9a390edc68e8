"""Endpoint health: `/health` plus a scrape of vLLM's `/metrics`.

The Prometheus text format is parsed with `prometheus_client`'s parser. vLLM renamed
its KV-cache gauge (`vllm:gpu_cache_usage_perc` → `vllm:kv_cache_usage_perc`); both are
accepted, since a pool may mix versions during an upgrade.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import httpx
from prometheus_client.parser import text_string_to_metric_families

from inference.types import Endpoint, EngineStats

logger = logging.getLogger(__name__)

_RUNNING = "vllm:num_requests_running"
_WAITING = "vllm:num_requests_waiting"
_KV_CACHE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
_PREFIX_QUERIES = "vllm:prefix_cache_queries"
_PREFIX_HITS = "vllm:prefix_cache_hits"


def parse_vllm_metrics(text: str) -> EngineStats:
    """Sum each gauge over its label sets (one per served model); KV usage takes the max."""
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # Counters arrive as `<family>_total` samples; `_created` samples are noise.
            if sample.name.endswith("_created"):
                continue
            name = sample.name.removesuffix("_total")
            if name in _KV_CACHE:
                sums[name] = max(sums.get(name, 0.0), float(sample.value))
            else:
                sums[name] = sums.get(name, 0.0) + float(sample.value)
    kv = next((sums[name] for name in _KV_CACHE if name in sums), 0.0)
    queries = sums.get(_PREFIX_QUERIES)
    hits = sums.get(_PREFIX_HITS)
    hit_rate = hits / queries if queries and hits is not None else None
    return EngineStats(
        healthy=True,
        running=sums.get(_RUNNING, 0.0),
        waiting=sums.get(_WAITING, 0.0),
        kv_cache_usage=kv,
        prefix_cache_hit_rate=hit_rate,
    )


def probe(endpoint: Endpoint, http: httpx.Client) -> EngineStats:
    """One health check. Never raises: an unreachable endpoint is an answer."""
    try:
        health = http.get(f"{endpoint.url}/health")
        if health.status_code != 200:
            return EngineStats(healthy=False, error=f"/health answered {health.status_code}")
        metrics = http.get(f"{endpoint.url}/metrics")
        if metrics.status_code != 200:
            # Serving but not reporting: route to it, without load information.
            return EngineStats(healthy=True, error=f"/metrics answered {metrics.status_code}")
        return parse_vllm_metrics(metrics.text)
    except httpx.HTTPError as exc:
        return EngineStats(healthy=False, error=f"{type(exc).__name__}: {exc}")
    except ValueError as exc:
        return EngineStats(healthy=True, error=f"unparseable /metrics: {exc}")


class HealthMonitor:
    """Polls every endpoint on an interval and reports each result to `on_result`.

    `poll_once()` does one round synchronously (for schedulers such as Celery beat);
    `start()` runs rounds on a daemon thread until `stop()`.
    """

    def __init__(
        self,
        endpoints: Callable[[], Sequence[Endpoint]],
        on_result: Callable[[Endpoint, EngineStats], None],
        *,
        interval_s: float = 5.0,
        timeout_s: float = 2.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._endpoints = endpoints
        self._on_result = on_result
        self.interval_s = interval_s
        self._http = httpx.Client(timeout=timeout_s, transport=transport)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> list[tuple[Endpoint, EngineStats]]:
        results = [(endpoint, probe(endpoint, self._http)) for endpoint in self._endpoints()]
        for endpoint, stats in results:
            self._on_result(endpoint, stats)
        return results

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="vllm-health", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # a bug here must not silently stop health checking
                logger.exception("health poll failed")
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 5)
            self._thread = None
        self._http.close()
