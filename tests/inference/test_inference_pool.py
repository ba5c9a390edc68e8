"""Pool: rendezvous affinity and failover rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from inference import (
    ChatRequest,
    ContextTooLong,
    Endpoint,
    EndpointDown,
    PartialFailure,
    Pool,
    PoolUnavailable,
    RequestRejected,
    VLLMClient,
)

MODEL = "Qwen/Qwen-7B-Chat"
REQUEST = ChatRequest(
    model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=32, temperature=0
)
SSE_HEADERS = {"content-type": "text/event-stream"}
SseBuilder = Callable[..., bytes]
Handler = Callable[[httpx.Request], httpx.Response]


def _endpoints(count: int, model: str = MODEL) -> list[Endpoint]:
    return [
        Endpoint(name=f"ep{i}", url=f"http://10.0.0.{i}:8000", model=model) for i in range(count)
    ]


def _key_ranking_first(pool: Pool, endpoint: Endpoint) -> str:
    for i in range(10_000):
        key = f"conversation-{i}"
        if pool.order(key)[0] == endpoint:
            return key
    raise AssertionError(f"no key ranks {endpoint} first")


class _FakeFleet:
    """Scripted endpoints behind httpx.MockTransport, counting the calls each receives."""

    def __init__(self, handlers: dict[str, Handler]) -> None:
        self.handlers = handlers
        self.calls: Counter[str] = Counter()

    def client_for(self, endpoint: Endpoint) -> VLLMClient:
        def handler(request: httpx.Request) -> httpx.Response:
            self.calls[endpoint.name] += 1
            return self.handlers[endpoint.name](request)

        return VLLMClient(endpoint, transport=httpx.MockTransport(handler))


def _ok(sse_body: SseBuilder, text: str) -> Handler:
    return lambda request: httpx.Response(200, headers=SSE_HEADERS, content=sse_body([text]))


def test_same_affinity_key_always_ranks_the_same_endpoint_first() -> None:
    endpoints = _endpoints(5)
    first = Pool(endpoints).order("tenant-1:conversation-42")
    assert first == Pool(endpoints).order("tenant-1:conversation-42")
    assert first == Pool(list(reversed(endpoints))).order("tenant-1:conversation-42")
    assert sorted(first, key=lambda ep: ep.name) == endpoints


def test_ranking_is_identical_in_another_process_with_a_different_hash_seed() -> None:
    endpoints = _endpoints(4)
    keys = [f"k{i}" for i in range(20)]
    script = (
        "import json, sys\n"
        "from inference import Endpoint, Pool\n"
        "eps = [Endpoint(**e) for e in json.loads(sys.argv[1])]\n"
        "keys = json.loads(sys.argv[2])\n"
        "print(json.dumps([[e.name for e in Pool(eps).order(k)] for k in keys]))\n"
    )
    arg = json.dumps([{"name": e.name, "url": e.url, "model": e.model} for e in endpoints])
    env = {
        **os.environ,
        "PYTHONHASHSEED": "12345",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    out = subprocess.run(
        [sys.executable, "-c", script, arg, json.dumps(keys)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    local = [[e.name for e in Pool(endpoints).order(k)] for k in keys]
    assert json.loads(out) == local


def test_removing_a_non_first_endpoint_keeps_the_first_choice() -> None:
    endpoints = _endpoints(5)
    for i in range(200):
        key = f"conversation-{i}"
        ranked = Pool(endpoints).order(key)
        survivors = [ep for ep in endpoints if ep != ranked[-1]]
        assert Pool(survivors).order(key)[0] == ranked[0]


def test_adding_an_endpoint_only_moves_conversations_onto_it() -> None:
    before, after = _endpoints(3), _endpoints(4)
    moved = 0
    for i in range(400):
        key = f"conversation-{i}"
        old, new = Pool(before).order(key)[0], Pool(after).order(key)[0]
        if old != new:
            assert new == after[-1]
            moved += 1
    assert 0 < moved < 400  # the new endpoint takes a share, not everything


def test_keys_spread_over_all_endpoints() -> None:
    endpoints = _endpoints(4)
    firsts = Counter(Pool(endpoints).order(f"conversation-{i}")[0].name for i in range(400))
    assert set(firsts) == {ep.name for ep in endpoints}


def test_healthy_first_choice_serves_the_request(sse_body: SseBuilder) -> None:
    endpoints = _endpoints(3)
    fleet = _FakeFleet({ep.name: _ok(sse_body, f"from {ep.name}") for ep in endpoints})
    with Pool(endpoints, client_factory=fleet.client_for) as pool:
        key = _key_ranking_first(pool, endpoints[1])
        result = pool.chat(REQUEST, affinity_key=key)
    assert result.text == "from ep1" and result.endpoint == endpoints[1]
    assert fleet.calls == {"ep1": 1}


def test_failover_from_a_dead_endpoint_to_the_live_simulator(
    simulator: Endpoint, closed_endpoint: Endpoint
) -> None:
    with Pool([closed_endpoint, simulator]) as pool:
        key = _key_ranking_first(pool, closed_endpoint)
        result = pool.chat(ChatRequest(simulator.model, REQUEST.messages, 32, 0), affinity_key=key)
    assert result.endpoint == simulator
    assert "You said: hi" in result.text


def test_every_endpoint_dead_raises_pool_unavailable_with_each_attempt(
    make_closed_endpoint: Callable[[str], Endpoint],
) -> None:
    dead = [make_closed_endpoint("dead-a"), make_closed_endpoint("dead-b")]
    with Pool(dead) as pool, pytest.raises(PoolUnavailable) as caught:
        pool.chat(REQUEST, affinity_key="c")
    attempts = caught.value.attempts
    assert [a.endpoint for a in attempts] == pool.order("c")
    assert all(isinstance(a, EndpointDown) for a in attempts)


def test_empty_pool_raises_pool_unavailable() -> None:
    with Pool([]) as pool, pytest.raises(PoolUnavailable) as caught:
        pool.chat(REQUEST, affinity_key="c")
    assert caught.value.attempts == []


def test_endpoints_serving_another_model_are_skipped(sse_body: SseBuilder) -> None:
    other = Endpoint(name="other", url="http://10.0.1.1:8000", model="meta-llama/Llama-3-8B")
    right = Endpoint(name="right", url="http://10.0.1.2:8000", model=MODEL)
    fleet = _FakeFleet({"other": _ok(sse_body, "wrong"), "right": _ok(sse_body, "right")})
    with Pool([other, right], client_factory=fleet.client_for) as pool:
        key = _key_ranking_first(pool, other)
        assert pool.chat(REQUEST, affinity_key=key).text == "right"
    assert fleet.calls == {"right": 1}


def test_no_endpoint_for_the_model_is_pool_unavailable_naming_the_model() -> None:
    with (
        Pool(_endpoints(2, model="meta-llama/Llama-3-8B")) as pool,
        pytest.raises(PoolUnavailable) as caught,
    ):
        pool.chat(REQUEST, affinity_key="c")
    assert MODEL in str(caught.value)


def test_overloaded_endpoint_fails_over_to_the_next(sse_body: SseBuilder) -> None:
    endpoints = _endpoints(2)

    def busy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"error": {"message": "busy"}})

    with Pool(endpoints) as probe:
        key = _key_ranking_first(probe, endpoints[0])
    fleet = _FakeFleet({"ep0": busy, "ep1": _ok(sse_body, "second")})
    with Pool(endpoints, client_factory=fleet.client_for) as pool:
        result = pool.chat(REQUEST, affinity_key=key)
    assert result.text == "second"
    assert fleet.calls == {"ep0": 1, "ep1": 1}


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (
            400,
            {"message": "too long", "type": "BadRequestError", "param": "input_tokens"},
            ContextTooLong,
        ),
        (
            404,
            {"message": "no such model", "type": "NotFoundError", "param": "model"},
            RequestRejected,
        ),
    ],
)
def test_non_retryable_error_is_not_retried(
    sse_body: SseBuilder, status: int, error: dict[str, str], expected: type[Exception]
) -> None:
    endpoints = _endpoints(2)
    with Pool(endpoints) as probe:
        key = _key_ranking_first(probe, endpoints[0])

    def failing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": {**error, "code": status}})

    fleet = _FakeFleet({"ep0": failing, "ep1": _ok(sse_body, "never")})
    with Pool(endpoints, client_factory=fleet.client_for) as pool, pytest.raises(expected):
        pool.chat(REQUEST, affinity_key=key)
    assert fleet.calls == {"ep0": 1}


def test_stream_that_dies_after_tokens_is_a_partial_failure(sse_body: SseBuilder) -> None:
    endpoints = _endpoints(2)
    with Pool(endpoints) as probe:
        key = _key_ranking_first(probe, endpoints[0])
    truncated = sse_body(["Half ", "an ", "ans"], finish_reason=None, done=False)
    fleet = _FakeFleet(
        {
            "ep0": lambda request: httpx.Response(200, headers=SSE_HEADERS, content=truncated),
            "ep1": _ok(sse_body, "never"),
        }
    )
    with (
        Pool(endpoints, client_factory=fleet.client_for) as pool,
        pytest.raises(PartialFailure) as caught,
    ):
        pool.chat(REQUEST, affinity_key=key)
    assert caught.value.partial_text == "Half an ans"
    assert caught.value.endpoint == endpoints[0]
    assert fleet.calls == {"ep0": 1}
