"""The OpenAI-compatible endpoint's model calls run on the event loop: a stream holds
no thread, and a client that hangs up stops the generation and is recorded as partial.
A slow simulator (real HTTP) makes generations long enough to watch."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import processes
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# 30 ms per engine step: one token per step, so 60 tokens take about 2 s.
_STEP_MS = "30"


@pytest.fixture
def slow_simulator(tmp_path: Path) -> Iterator[str]:
    port = processes.free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        sys.executable,
        "-m",
        "inference.simulator",
        "--port",
        str(port),
        "--name",
        "slow",
        "--step-base-ms",
        _STEP_MS,
        "--reply-min-tokens",
        "400",
        "--reply-max-tokens",
        "400",
    ]
    with processes.running(argv, log=tmp_path / "slow.log") as process:
        wait_until(
            lambda: process.poll() is not None or _running(url) == 0,
            timeout=30,
            what="the slow simulator",
        )
        assert process.poll() is None, (tmp_path / "slow.log").read_text()
        yield url


def _running(url: str) -> float | None:
    """vLLM's own gauge of the requests the server is generating for right now."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    for family in text_string_to_metric_families(text):
        if family.name == "vllm:num_requests_running":
            return sum(sample.value for sample in family.samples)
    return None


@pytest.fixture
def one_thread_web(tmp_path: Path, slow_simulator: str, bot: Any) -> Iterator[str]:
    """A server with a single API thread, on the slow simulator only."""
    from django.conf import settings

    from switchboard.api.completions import api_connector
    from switchboard.pool.models import InferenceEndpoint

    InferenceEndpoint.objects.create(name="slow", url=slow_simulator)
    # Made here, not by the server (see test_openai._api_connector).
    api_connector(bot)
    bot.max_tokens = 400
    bot.save(update_fields=["max_tokens"])
    with processes.web_server(
        tmp_path,
        database_url=processes.database_url_for(
            settings.DATABASE_URL, settings.DATABASES["default"]["NAME"]
        ),
        redis_url=settings.REDIS_URL,
        extra_env={"SWITCHBOARD_API_THREADS": "1", "SWITCHBOARD_POOL_REFRESH_S": "0"},
    ) as url:
        yield url


def _stream(http: httpx.Client, web: str, key: str, bot: Any, max_tokens: int) -> Any:
    return http.stream(
        "POST",
        f"{web}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": bot.name,
            "stream": True,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "Tell me a long story"}],
        },
        timeout=60,
    )


def test_streams_outnumber_the_api_threads(
    one_thread_web: str, slow_simulator: str, key: str, bot: Any
) -> None:
    streams = 4
    with httpx.Client() as http, contextlib.ExitStack() as stack:
        responses = [
            stack.enter_context(_stream(http, one_thread_web, key, bot, max_tokens=60))
            for _ in range(streams)
        ]
        # With one thread per stream, the second would not start before the first ended.
        wait_until(
            lambda: (_running(slow_simulator) or 0) >= streams,
            timeout=30,
            what=f"{streams} generations at once behind one API thread",
        )
        for response in responses:
            assert response.status_code == 200
            data = [line for line in response.iter_lines() if line.startswith("data: ")]
            assert data[-1] == "data: [DONE]"


def _abandoned(slow_simulator: str, tenant: Any) -> Any:
    """After a client hung up three pieces into a 400-token reply: the generation stops
    upstream (400 tokens take 12 s) and the call is in the ledger as partial."""
    from switchboard.metering.models import UsageRecord

    wait_until(
        lambda: _running(slow_simulator) == 0, timeout=8, what="the generation to be abandoned"
    )
    usage = wait_until(
        lambda: UsageRecord.objects.filter(tenant=tenant).first(),
        timeout=15,
        what="the call in the ledger",
    )
    assert usage.outcome == "partial"
    assert usage.completion_tokens >= 3
    return usage


def test_a_client_that_hangs_up_stops_the_generation_and_is_partial(
    one_thread_web: str, slow_simulator: str, key: str, bot: Any, tenant: Any
) -> None:
    from switchboard.conversations.models import Message

    with httpx.Client() as http, _stream(http, one_thread_web, key, bot, max_tokens=400) as r:
        content = 0
        for line in r.iter_lines():
            if '"content":' in line and '"content": ""' not in line and '"content":""' not in line:
                content += 1
            if content >= 3:
                break
    usage = _abandoned(slow_simulator, tenant)
    inbound = Message.objects.get(pk=usage.message_id)
    assert inbound.status == "failed" and inbound.error == "the client disconnected"


def test_a_rest_stream_send_is_cancelled_when_its_client_hangs_up(
    one_thread_web: str, slow_simulator: str, key: str, bot: Any, tenant: Any
) -> None:

    with (
        httpx.Client() as http,
        http.stream(
            "POST",
            f"{one_thread_web}/api/v1/bots/{bot.pk}/messages/",
            headers={"Authorization": f"Bearer {key}"},
            json={"user": "erin", "text": "Tell me a long story", "mode": "stream"},
            timeout=60,
        ) as response,
    ):
        assert response.status_code == 200
        deltas = 0
        for line in response.iter_lines():
            deltas += line == "event: delta"
            if deltas >= 3:
                break
    _abandoned(slow_simulator, tenant)
