"""Circuit-breaker state, which lives in each worker's memory, on the GPU pool page."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis
from django.test import Client

pytestmark = pytest.mark.django_db


def test_workers_report_their_circuits_and_the_pool_page_shows_them(
    operator_client: Client, redis_client: redis.Redis
) -> None:
    from switchboard.pool.models import InferenceEndpoint
    from switchboard.pool.runtime import (
        BREAKERS_KEY,
        breaker_reports,
        breakers_publish,
        worker_pool,
    )

    names = [f"gpu-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    for name in names:
        InferenceEndpoint.objects.create(name=name, url=f"http://{name}.invalid:8000")
    try:
        pool = worker_pool()
        broken = next(s.endpoint for s in pool.snapshot() if s.endpoint.name == names[0])
        breaker = pool.breaker(broken)
        while str(breaker.state) != "open":
            breaker.record_failure()
        breakers_publish(pool)

        assert breaker_reports(names) == {names[0]: {"open": 1}, names[1]: {"closed": 1}}
        table = operator_client.get("/console/pool/table/").content.decode()
        broken_row = table[table.index(f'data-endpoint="{names[0]}"') :]
        assert "circuit open in 1 of 1 workers" in broken_row.split("</tr>")[0]
        healthy_row = table[table.index(f'data-endpoint="{names[1]}"') :]
        assert "circuit closed (1 worker)" in healthy_row.split("</tr>")[0]
    finally:
        redis_client.delete(*(f"{BREAKERS_KEY}:{name}" for name in names))


def test_reports_of_workers_gone_quiet_are_ignored(redis_client: redis.Redis) -> None:
    import time

    from switchboard.pool.runtime import BREAKER_REPORT_TTL_S, BREAKERS_KEY, breaker_reports

    name = f"gpu-{uuid.uuid4().hex[:6]}"
    stale = int(time.time()) - BREAKER_REPORT_TTL_S - 5
    redis_client.hset(f"{BREAKERS_KEY}:{name}", "old-host:1", f"open|{stale}")
    try:
        assert breaker_reports([name]) == {name: {}}
    finally:
        redis_client.delete(f"{BREAKERS_KEY}:{name}")


def test_publishing_never_fails_the_caller(settings: Any, caplog: Any) -> None:
    from switchboard.pool import runtime
    from switchboard.pool.models import InferenceEndpoint

    InferenceEndpoint.objects.create(name="gpu-x", url="http://gpu-x.invalid:8000")
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    runtime._published.clear()
    runtime.breakers_publish()  # must not raise
    assert "could not publish circuit breaker states" in caplog.text
