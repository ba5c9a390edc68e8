"""Counter writes are best effort: Redis trouble never fails the work being counted."""

from __future__ import annotations

import logging
import time
from typing import Any
from unittest import mock

import pytest

from switchboard.observability import counters


def test_a_redis_outage_never_fails_the_counted_work_and_pauses_writes(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    counters.client.cache_clear()
    counters._last_warning = 0.0

    with caplog.at_level(logging.WARNING, logger=counters.__name__):
        counters.refusal(tenant_id="t", connector_kind="webhook", reason="rate_limited")
    assert "could not count a refusal" in caplog.text
    assert counters._paused_until > time.monotonic()

    # While paused, no write is even tried: an outage costs messages no timeouts.
    with mock.patch.object(counters, "client") as client:
        counters.refusal(tenant_id="t", connector_kind="webhook", reason="rate_limited")
    client.assert_not_called()


def test_writes_resume_after_the_pause(redis_client: Any) -> None:
    counters._paused_until = time.monotonic() - 1
    counters.refusal(tenant_id="t", connector_kind="webhook", reason="mau_limit")
    stored = redis_client.hget(
        counters.key(counters.REFUSALS), counters.field("t", "webhook", "mau_limit")
    )
    assert stored == b"1"
