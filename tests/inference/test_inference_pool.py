"""Pool: routing, failover rules, breakers and slot bookkeeping, against scripted fake
endpoints (httpx.MockTransport) and, for failover, one real simulator."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from inference import (
    BreakerState,
    ChatRequest,
    ChatResult,
    CircuitBreaker,
    ContextTooLong,
    Endpoint,
    EndpointDown,
    EngineStats,
    Overloaded,
    PartialFailure,
    Pool,
    PoolUnavailable,
    RequestRejected,
    RoundRobin,
    RouteContext,
    TokenDelta,
)
from tests.inference.support import SSE_HEADERS, FakeFleet, FixedOrder, Handler

MODEL = "Qwen/Qwen-7B-Chat"
REQUEST = ChatRequest(
    model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=32, temperature=0
)
SseBuilder = Callable[..., bytes]


def _endpoints(count: int, model: str = MODEL) -> list[Endpoint]:
    return [
        Endpoint(name=f"ep{i}", url=f"http://10.0.0.{i}:8000", model=model) for i in range(count)
    ]


def _key_ranking_first(pool: Pool, endpoint: Endpoint) -> str:
    for i in range(10_000):
        key = f"conversation-{i}"
        if pool.candidates(REQUEST, RouteContext(affinity_key=key))[0] == endpoint:
            return key
    raise AssertionError(f"no key ranks {endpoint} first")


def _ok(sse_body: SseBuilder, *pieces: str) -> Handler:
    usage = {"prompt_tokens": 3, "completion_tokens": len(pieces), "total_tokens": 3}
    body = sse_body(list(pieces), usage=usage)
    return lambda request: httpx.Response(200, headers=SSE_HEADERS, content=body)


def _status(status: int, **error: object) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": {"message": "x", **error, "code": status}})

    return handler


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# -- routing --------------------------------------------------------------------------------


def test_the_affinity_keys_home_endpoint_serves_the_request(sse_body: SseBuilder) -> None:
    endpoints = _endpoints(3)
    fleet = FakeFleet({ep.name: _ok(sse_body, f"from {ep.name}") for ep in endpoints})
    with Pool(endpoints, client_factory=fleet.client_for) as pool:
        key = _key_ranking_first(pool, endpoints[1])
        first = pool.chat(REQUEST, RouteContext(affinity_key=key))
        again = pool.chat(REQUEST, RouteContext(affinity_key=key))
    assert first.text == again.text == "from ep1"
    assert first.endpoint == endpoints[1]
    assert first.attempts == 1
    assert fleet.calls == {"ep1": 2}


def test_endpoints_serving_another_model_are_skipped(sse_body: SseBuilder) -> None:
    other = Endpoint(name="other", url="http://10.0.1.1:8000", model="meta-llama/Llama-3-8B")
    right = Endpoint(name="right", url="http://10.0.1.2:8000", model=MODEL)
    fleet = FakeFleet({"other": _ok(sse_body, "wrong"), "right": _ok(sse_body, "right")})
    with Pool(
        [other, right], strategy=FixedOrder("other", "right"), client_factory=fleet.client_for
    ) as pool:
        assert pool.candidates(REQUEST, RouteContext()) == [right]
        assert pool.chat(REQUEST).text == "right"
    assert fleet.calls == {"right": 1}


def test_draining_and_unhealthy_endpoints_are_not_candidates() -> None:
    live, unhealthy = _endpoints(2)
    draining = Endpoint(name="drain", url="http://10.0.0.9:8000", model=MODEL, draining=True)
    with Pool([live, unhealthy, draining]) as pool:
        pool.update_stats(unhealthy, EngineStats(healthy=False, error="down"))
        assert pool.candidates(REQUEST, RouteContext()) == [live]


# -- failover -------------------------------------------------------------------------------


def test_a_dead_endpoint_fails_over_to_the_live_simulator(
    simulator: Endpoint, closed_endpoint: Endpoint
) -> None:
    order = FixedOrder(closed_endpoint.name, simulator.name)
    with Pool([closed_endpoint, simulator], strategy=order) as pool:
        result = pool.chat(REQUEST)
    assert result.endpoint == simulator
    assert result.attempts == 2
    assert "You said: hi" in result.text


def test_an_overloaded_endpoint_fails_over_to_the_next(sse_body: SseBuilder) -> None:
    endpoints = _endpoints(2)
    fleet = FakeFleet({"ep0": _status(503), "ep1": _ok(sse_body, "second")})
    with Pool(endpoints, strategy=FixedOrder("ep0", "ep1"), client_factory=fleet.client_for) as p:
        result = p.chat(REQUEST)
    assert result.text == "second"
    assert result.attempts == 2
    assert fleet.calls == {"ep0": 1, "ep1": 1}


@pytest.mark.parametrize("stream", [True, False])
def test_non_streamed_and_streamed_calls_fail_over_alike(
    sse_body: SseBuilder, stream: bool
) -> None:
    endpoints = _endpoints(2)

    def ok_either_way(request: httpx.Request) -> httpx.Response:
        if b'"stream":true' in request.content.replace(b" ", b""):
            return _ok(sse_body, "fine")(request)
        choice = {"index": 0, "message": {"content": "fine"}, "finish_reason": "stop"}
        return httpx.Response(200, json={"choices": [choice], "usage": {}})

    fleet = FakeFleet({"ep0": _status(502), "ep1": ok_either_way})
    with Pool(endpoints, strategy=FixedOrder("ep0", "ep1"), client_factory=fleet.client_for) as p:
        result = p.chat(REQUEST, stream=stream)
    assert (result.text, result.attempts, result.endpoint) == ("fine", 2, endpoints[1])


def test_every_endpoint_dead_raises_pool_unavailable_with_each_attempt_in_order(
    make_closed_endpoint: Callable[[str], Endpoint],
) -> None:
    dead = [make_closed_endpoint("dead-a"), make_closed_endpoint("dead-b")]
    with Pool(dead, strategy=FixedOrder("dead-b", "dead-a")) as pool:
        with pytest.raises(PoolUnavailable) as caught:
            pool.chat(REQUEST)
        snapshot = pool.snapshot()
    attempts = caught.value.attempts
    assert [a.endpoint for a in attempts] == [dead[1], dead[0]]
    assert all(isinstance(a, EndpointDown) for a in attempts)
    assert [s.in_flight for s in snapshot] == [0, 0]


def test_an_empty_pool_raises_pool_unavailable_without_attempts() -> None:
    with Pool([]) as pool, pytest.raises(PoolUnavailable) as caught:
        pool.chat(REQUEST, RouteContext(affinity_key="c"))
    assert caught.value.attempts == []
    assert "no inference endpoints" in str(caught.value)


def test_no_endpoint_for_the_model_is_pool_unavailable_naming_the_model() -> None:
    with (
        Pool(_endpoints(2, model="meta-llama/Llama-3-8B")) as pool,
        pytest.raises(PoolUnavailable) as caught,
    ):
        pool.chat(REQUEST)
    assert MODEL in str(caught.value)
    assert caught.value.attempts == []


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (400, {"type": "BadRequestError", "param": "input_tokens"}, ContextTooLong),
        (404, {"type": "NotFoundError", "param": "model"}, RequestRejected),
    ],
)
def test_a_non_retryable_error_is_raised_without_trying_another_endpoint(
    sse_body: SseBuilder, status: int, error: dict[str, str], expected: type[Exception]
) -> None:
    endpoints = _endpoints(2)
    fleet = FakeFleet({"ep0": _status(status, **error), "ep1": _ok(sse_body, "never")})
    with Pool(endpoints, strategy=FixedOrder("ep0", "ep1"), client_factory=fleet.client_for) as p:
        with pytest.raises(expected):
            p.chat(REQUEST)
        # The request was at fault, not the endpoint.
        assert p.breaker(endpoints[0]).state is BreakerState.CLOSED
        assert p.snapshot()[0].in_flight == 0
    assert fleet.calls == {"ep0": 1}


def test_a_stream_that_dies_after_tokens_is_a_partial_failure_and_not_retried(
    sse_body: SseBuilder,
) -> None:
    endpoints = _endpoints(2)
    truncated = sse_body(["Half ", "an ", "ans"], finish_reason=None, done=False)
    fleet = FakeFleet(
        {
            "ep0": lambda request: httpx.Response(200, headers=SSE_HEADERS, content=truncated),
            "ep1": _ok(sse_body, "never"),
        }
    )
    seen: list[str] = []
    with Pool(endpoints, strategy=FixedOrder("ep0", "ep1"), client_factory=fleet.client_for) as p:
        with pytest.raises(PartialFailure) as caught:
            for item in p.stream(REQUEST):
                assert isinstance(item, TokenDelta)
                seen.append(item.text)
        assert p.snapshot()[0].in_flight == 0
    assert "".join(seen) == caught.value.partial_text == "Half an ans"
    assert caught.value.endpoint == endpoints[0]
    assert fleet.calls == {"ep0": 1}


def test_the_request_deadline_stops_failover(sse_body: SseBuilder) -> None:
    endpoints = _endpoints(2)
    clock = _Clock()

    def slow_then_overloaded(request: httpx.Request) -> httpx.Response:
        clock.now += 10.0  # this attempt used up the whole deadline
        return _status(503)(request)

    fleet = FakeFleet({"ep0": slow_then_overloaded, "ep1": _ok(sse_body, "too late")})
    with (
        Pool(
            endpoints,
            strategy=FixedOrder("ep0", "ep1"),
            client_factory=fleet.client_for,
            clock=clock,
        ) as pool,
        pytest.raises(PoolUnavailable) as caught,
    ):
        pool.chat(REQUEST, RouteContext(deadline_s=5.0))
    assert [type(a) for a in caught.value.attempts] == [Overloaded]
    assert fleet.calls == {"ep0": 1}


# -- breakers -------------------------------------------------------------------------------


def _half_open_pool(
    sse_body: SseBuilder, ep0_later: Handler, clock: _Clock
) -> tuple[Pool, FakeFleet, list[Endpoint]]:
    """A pool whose ep0 breaker has opened once (threshold 1) and is now half-open; ep0
    then answers with `ep0_later`, ep1 always succeeds."""
    endpoints = _endpoints(2)
    calls = itertools.count()

    def first_fails(request: httpx.Request) -> httpx.Response:
        if next(calls) == 0:
            return _status(503)(request)
        return ep0_later(request)

    fleet = FakeFleet({"ep0": first_fails, "ep1": _ok(sse_body, "fallback")})
    pool = Pool(
        endpoints,
        strategy=FixedOrder("ep0", "ep1"),
        client_factory=fleet.client_for,
        breaker_factory=lambda: CircuitBreaker(failure_threshold=1, reset_after_s=30, clock=clock),
    )
    assert pool.chat(REQUEST).endpoint == endpoints[1]
    assert pool.breaker(endpoints[0]).state is BreakerState.OPEN
    assert pool.candidates(REQUEST, RouteContext()) == [endpoints[1]]
    clock.now += 30
    assert pool.breaker(endpoints[0]).state is BreakerState.HALF_OPEN
    return pool, fleet, endpoints


def test_a_successful_probe_closes_an_open_breaker(sse_body: SseBuilder) -> None:
    clock = _Clock()
    pool, _, endpoints = _half_open_pool(sse_body, _ok(sse_body, "back"), clock)
    with pool:
        result = pool.chat(REQUEST)
        assert result.endpoint == endpoints[0]
        assert pool.breaker(endpoints[0]).state is BreakerState.CLOSED


def test_a_request_fault_during_the_probe_frees_the_probe(sse_body: SseBuilder) -> None:
    clock = _Clock()
    too_long = _status(400, param="input_tokens")
    pool, _, endpoints = _half_open_pool(sse_body, too_long, clock)
    with pool, pytest.raises(ContextTooLong):
        pool.chat(REQUEST)
    breaker = pool.breaker(endpoints[0])
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.available(), "probe still taken: the endpoint would never be tried again"


def test_an_abandoned_stream_frees_its_slot_and_the_probe(sse_body: SseBuilder) -> None:
    clock = _Clock()
    ok = _ok(sse_body, "one ", "two ", "three")
    pool, _, endpoints = _half_open_pool(sse_body, ok, clock)
    with pool:
        stream = pool.stream(REQUEST)
        assert next(stream) == TokenDelta("one ")
        assert pool.snapshot()[0].in_flight == 1
        assert not pool.breaker(endpoints[0]).available()  # the probe is out
        stream.close()  # the caller went away (e.g. the user closed the chat)
        assert pool.snapshot()[0].in_flight == 0
        assert pool.breaker(endpoints[0]).available()


def test_the_slot_is_free_as_soon_as_the_result_is_handed_over(sse_body: SseBuilder) -> None:
    endpoints = _endpoints(1)
    fleet = FakeFleet({"ep0": _ok(sse_body, "a", "b")})
    with Pool(endpoints, client_factory=fleet.client_for) as pool:
        stream = pool.stream(REQUEST)
        items = []
        for item in stream:
            items.append(item)
            if isinstance(item, ChatResult):
                break  # keeps `stream` alive and suspended, as many callers do
        assert pool.snapshot()[0].in_flight == 0
        assert [type(i) for i in items] == [TokenDelta, TokenDelta, ChatResult]
        stream.close()


def test_round_robin_through_the_pool_reaches_every_endpoint_evenly(
    sse_body: SseBuilder,
) -> None:
    # Admission used to rank twice per request, so a 2- or 4-endpoint pool only ever
    # used every other endpoint.
    endpoints = _endpoints(4)
    fleet = FakeFleet({ep.name: _ok(sse_body, "x") for ep in endpoints})
    with Pool(endpoints, strategy=RoundRobin(), client_factory=fleet.client_for) as pool:
        served = Counter(pool.chat(REQUEST).endpoint.name for _ in range(40))
    assert served == {"ep0": 10, "ep1": 10, "ep2": 10, "ep3": 10}
