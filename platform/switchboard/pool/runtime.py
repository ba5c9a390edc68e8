"""The one `inference.Pool` of a worker process.

A pool's admission budgets, circuit breakers and round-robin counters only mean
something if every thread of the process shares them, so there is one per process
(like Django's connection handler). It reads endpoints and their last health check
from the database, refreshed at most every SWITCHBOARD_POOL_REFRESH_S seconds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from functools import cache

import redis
from django.conf import settings

from inference import Endpoint, Pool, Timeouts, strategy_by_name
from switchboard.pool.selectors import endpoint_list_with_stats

logger = logging.getLogger(__name__)


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
            # Never from an event loop (the tenant API's async model calls): the query
            # would stall every request of the process. There the list loaded last is
            # used; the API reads it from a thread before each call, which loads it when due.
            if time.monotonic() - self._loaded_at >= self.refresh_s and not _on_event_loop():
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


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


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


# Circuit breakers live in each worker process's memory. Workers publish their view here
# (one hash per endpoint, a field per worker) so the console can show it.
BREAKERS_KEY = "switchboard:pool:breakers"
# A worker that has not published for this long is not counted (gone, or idle).
BREAKER_REPORT_TTL_S = 600
_PUBLISH_EVERY_S = 30.0
_published: dict[str, str] = {}
_published_at = 0.0


def breakers_publish(pool: Pool | None = None) -> None:
    """Publish this process's breaker states when they change (or every 30 s).
    Best effort: a Redis hiccup must never fail the task that calls it."""
    global _published_at
    try:
        pool = pool or worker_pool()
        states = {s.endpoint.name: str(s.breaker) for s in pool.snapshot()}
        now = time.time()
        if states == _published and now - _published_at < _PUBLISH_EVERY_S:
            return
        worker = f"{socket.gethostname()}:{os.getpid()}"
        client = redis.Redis.from_url(settings.REDIS_URL)
        with client.pipeline() as pipe:
            for name, state in states.items():
                key = f"{BREAKERS_KEY}:{name}"
                pipe.hset(key, worker, f"{state}|{int(now)}")
                pipe.expire(key, BREAKER_REPORT_TTL_S)
            pipe.execute()
        client.close()
        _published.clear()
        _published.update(states)
        _published_at = now
    except Exception:
        logger.warning("could not publish circuit breaker states", exc_info=True)


def breaker_reports(names: list[str]) -> dict[str, dict[str, int]]:
    """For each endpoint, how many live workers see its circuit in each state."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    cutoff = time.time() - BREAKER_REPORT_TTL_S
    reports: dict[str, dict[str, int]] = {}
    try:
        with client.pipeline() as pipe:
            for name in names:
                pipe.hgetall(f"{BREAKERS_KEY}:{name}")
            results = pipe.execute()
    except redis.RedisError:
        return {}
    finally:
        client.close()
    for name, fields in zip(names, results, strict=True):
        counts: dict[str, int] = {}
        for value in fields.values():
            state, _, at = value.decode().partition("|")
            if at.isdigit() and int(at) >= cutoff:
                counts[state] = counts.get(state, 0) + 1
        reports[name] = counts
    return reports
