"""The one `inference.Pool` of a worker process.

A pool's admission budgets, circuit breakers and round-robin counters only mean
something if every thread of the process shares them, so there is one per process
(like Django's connection handler). It reads endpoints and their last health check
from the database, refreshed at most every SWITCHBOARD_POOL_REFRESH_S seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from functools import cache

from django.conf import settings

from inference import Endpoint, Pool, Timeouts, strategy_by_name
from switchboard.pool.selectors import endpoint_list_with_stats


class DatabaseDiscovery:
    """`inference.Discovery` over InferenceEndpoint rows, with a short cache."""

    def __init__(self, *, refresh_s: float) -> None:
        self.refresh_s = refresh_s
        self.pool: Pool | None = None
        self._endpoints: list[Endpoint] = []
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def endpoints(self) -> Sequence[Endpoint]:
        with self._lock:
            if time.monotonic() - self._loaded_at >= self.refresh_s:
                self._load()
            return list(self._endpoints)

    def invalidate(self) -> None:
        with self._lock:
            self._loaded_at = float("-inf")

    def _load(self) -> None:
        rows = endpoint_list_with_stats()
        self._endpoints = [endpoint for endpoint, _ in rows]
        self._loaded_at = time.monotonic()
        if self.pool is not None:
            for endpoint, stats in rows:
                if stats is not None:
                    self.pool.update_stats(endpoint, stats, kick=False)


@cache
def worker_pool() -> Pool:
    discovery = DatabaseDiscovery(refresh_s=settings.SWITCHBOARD_POOL_REFRESH_S)
    pool = Pool(
        discovery,
        strategy=strategy_by_name(settings.SWITCHBOARD_ROUTING_STRATEGY),
        timeouts=Timeouts(
            connect=settings.SWITCHBOARD_INFERENCE_CONNECT_S,
            first_token=settings.SWITCHBOARD_INFERENCE_FIRST_TOKEN_S,
            total=settings.SWITCHBOARD_INFERENCE_TOTAL_S,
        ),
        max_queue=settings.SWITCHBOARD_POOL_MAX_QUEUE,
    )
    discovery.pool = pool
    return pool


def worker_pool_reset() -> None:
    """Close and forget this process's pool (tests; endpoint set replaced wholesale)."""
    if worker_pool.cache_info().currsize:
        worker_pool().close()
    worker_pool.cache_clear()
