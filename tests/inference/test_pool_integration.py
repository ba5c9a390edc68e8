"""The pool against real simulator subprocesses: endpoints that die, hang, drain, refuse,
overload and break mid-stream; saturation, priorities and fairness end to end.

Faults come from the simulator's own flags and its `/_sim/faults` endpoint. Every wait is
a condition with a deadline or a bounded join; nothing asserts on latency.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from inference import (
    BreakerState,
    Busy,
    ChatRequest,
    ChatResult,
    CircuitBreaker,
    ContextTooLong,
    Endpoint,
    InferenceError,
    InferenceTimeout,
    PartialFailure,
    Pool,
    PoolUnavailable,
    Priority,
    RoundRobin,
    RouteContext,
    Timeouts,
    TokenDelta,
    VLLMClient,
    probe,
)
from tests.inference.support import FixedOrder, SimProcess, running_simulators, wait_until

FAST = ["--time-scale", "0.01", "--max-model-len", "512"]
FAST += ["--reply-min-tokens", "0", "--reply-max-tokens", "0"]  # marker and echo only
JOIN_S = 30.0
TIMEOUTS = Timeouts(connect=2.0, first_token=20.0, total=30.0)


def _request(endpoint: Endpoint, text: str = "hi") -> ChatRequest:
    return ChatRequest(
        model=endpoint.model,
        messages=({"role": "user", "content": text},),
        max_tokens=64,
        temperature=0.0,
    )


@pytest.fixture(scope="module")
def sims(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, SimProcess]]:
    """Two healthy simulators, one whose faults tests switch on, and one that refuses
    every connection."""
    log_dir = tmp_path_factory.mktemp("pool-integration")
    with running_simulators(
        log_dir,
        ("good-a", FAST),
        ("good-b", FAST),
        ("faulty", FAST),
        ("refusing", ["--refuse-connections"]),
    ) as started:
        yield {sim.endpoint.name: sim for sim in started}


@pytest.fixture
def faulty(sims: dict[str, SimProcess]) -> Iterator[SimProcess]:
    sim = sims["faulty"]
    try:
        yield sim
    finally:
        sim.set_faults(error_rate=0, hang_rate=0, die_mid_stream_rate=0, latency_spike_rate=0)


class _MutableDiscovery:
    """Endpoints are frozen values: to drain one, swap in a changed copy."""

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        self.current = tuple(endpoints)

    def endpoints(self) -> Sequence[Endpoint]:
        return self.current


class _RecordingClient(VLLMClient):
    """Logs (endpoint, last user message) when the pool starts a stream on it: with
    `max_concurrency=1` that is exactly the order admission granted the slot."""

    def __init__(self, endpoint: Endpoint, log: list[tuple[str, str]]) -> None:
        super().__init__(endpoint, timeouts=TIMEOUTS)
        self._log = log

    def stream_chat(
        self, request: ChatRequest, *, budget_s: float | None = None
    ) -> Iterator[TokenDelta | ChatResult]:
        self._log.append((self.endpoint.name, request.messages[-1]["content"]))
        return super().stream_chat(request, budget_s=budget_s)


def _recording_pool(
    endpoints: Sequence[Endpoint], log: list[tuple[str, str]], **kwargs: object
) -> Pool:
    return Pool(
        endpoints,
        client_factory=lambda e: _RecordingClient(e, log),
        timeouts=TIMEOUTS,
        **kwargs,  # type: ignore[arg-type]
    )


class _Call(threading.Thread):
    """One pool.stream call on a thread, keeping everything it saw."""

    def __init__(self, pool: Pool, request: ChatRequest, ctx: RouteContext | None = None):
        super().__init__(daemon=True)
        self.pool = pool
        self.request = request
        self.ctx = ctx or RouteContext()
        self.items: list[TokenDelta | ChatResult] = []
        self.error: BaseException | None = None
        self.finished = threading.Event()

    def run(self) -> None:
        try:
            for item in self.pool.stream(self.request, self.ctx):
                self.items.append(item)
        except BaseException as exc:  # recorded for the test to assert on
            self.error = exc
        finally:
            self.finished.set()

    @property
    def results(self) -> list[ChatResult]:
        return [i for i in self.items if isinstance(i, ChatResult)]

    def result(self) -> ChatResult:
        assert self.error is None, self.error
        assert len(self.results) == 1 and self.items[-1] is self.results[0]
        return self.results[0]


def _text(items: Sequence[TokenDelta | ChatResult]) -> str:
    return "".join(i.text for i in items if isinstance(i, TokenDelta))


def _in_flight(pool: Pool, name: str) -> int:
    return next(s.in_flight for s in pool.snapshot() if s.endpoint.name == name)


def _hold_a_stream(pool: Pool, request: ChatRequest) -> Iterator[TokenDelta | ChatResult]:
    """Start a stream and stop after its first token: its slot stays taken until the
    caller finishes it."""
    stream = pool.stream(request)
    assert isinstance(next(stream), TokenDelta)
    return stream


# -- an endpoint dies under load ------------------------------------------------------------


def test_killing_an_endpoint_under_load_loses_no_request_and_retries_those_without_tokens(
    sims: dict[str, SimProcess], tmp_path: Path
) -> None:
    survivor = sims["good-a"].endpoint
    # Every request to the victim stalls before its first token (a long prefill), so
    # all of them are in flight on it when it dies.
    stall = ["--latency-spike-rate", "1", "--latency-spike-ms", "6000000"]
    with running_simulators(tmp_path, ("victim", FAST + stall)) as (victim,):
        pool = Pool([victim.endpoint, survivor], strategy=RoundRobin(), timeouts=TIMEOUTS)
        calls = [_Call(pool, _request(survivor, f"request {i}")) for i in range(20)]
        for call in calls:
            call.start()

        def on_victim() -> int:
            return _in_flight(pool, "victim")

        with httpx.Client(timeout=5.0) as http:
            # Every call has either finished on the survivor or reached the victim's
            # engine (so the kill lands mid-request, not before a connect).
            wait_until(
                lambda: (
                    on_victim() > 0
                    and sum(c.finished.is_set() for c in calls) + on_victim() == 20
                    and probe(victim.endpoint, http).running == on_victim()
                ),
                JOIN_S,
                "all 20 calls either done or running on the victim",
            )
        stranded = on_victim()
        victim.kill()
        for call in calls:
            call.join(JOIN_S)
        assert not any(call.is_alive() for call in calls)
        snapshot = {s.endpoint.name: s for s in pool.snapshot()}
        pool.close()

    # All 20 accounted for, each exactly once, each with its own answer.
    for i, call in enumerate(calls):
        result = call.result()
        assert result.endpoint == survivor
        assert _text(call.items) == result.text
        assert f"You said: request {i}" in result.text
    retried = [c.result() for c in calls if c.result().attempts == 2]
    assert len(retried) == stranded
    assert all(c.result().attempts in (1, 2) for c in calls)
    assert snapshot["victim"].in_flight == snapshot["good-a"].in_flight == 0
    assert snapshot["victim"].breaker is BreakerState.OPEN


# -- an endpoint hangs ----------------------------------------------------------------------


def test_a_hanging_endpoint_hits_the_first_token_deadline_and_fails_over(
    sims: dict[str, SimProcess], faulty: SimProcess
) -> None:
    faulty.set_faults(hang_rate=1.0)
    good = sims["good-a"].endpoint
    timeouts = Timeouts(connect=2.0, first_token=0.5, total=30.0)
    with Pool(
        [faulty.endpoint, good], strategy=FixedOrder("faulty", "good-a"), timeouts=timeouts
    ) as pool:
        call = _Call(pool, _request(good, "are you there"))
        call.start()
        call.join(JOIN_S)
        assert not call.is_alive(), "the hang was not cut off by the first-token deadline"
    result = call.result()
    assert result.endpoint == good
    assert result.attempts == 2


def test_the_request_deadline_bounds_a_call_that_only_has_a_hanging_endpoint(
    faulty: SimProcess,
) -> None:
    faulty.set_faults(hang_rate=1.0)
    # The client alone would wait minutes for a first token (longer than the join below);
    # the caller allows 0.5 s.
    patient = Timeouts(first_token=300.0, total=600.0)
    with Pool([faulty.endpoint], timeouts=patient) as pool:
        call = _Call(pool, _request(faulty.endpoint), RouteContext(deadline_s=0.5))
        call.start()
        call.join(JOIN_S)
        assert not call.is_alive(), "the request deadline was not honoured"
        assert _in_flight(pool, "faulty") == 0
    assert call.items == []
    error = call.error
    assert isinstance(error, PoolUnavailable | InferenceTimeout), error
    if isinstance(error, PoolUnavailable):
        assert [type(a) for a in error.attempts] == [InferenceTimeout]


# -- overload, broken streams, refused connections, breakers --------------------------------


def test_an_endpoint_answering_503_fails_over(
    sims: dict[str, SimProcess], faulty: SimProcess
) -> None:
    faulty.set_faults(error_rate=1.0)
    good = sims["good-b"].endpoint
    log: list[tuple[str, str]] = []
    with _recording_pool(
        [faulty.endpoint, good], log, strategy=FixedOrder("faulty", "good-b")
    ) as p:
        result = p.chat(_request(good, "overloaded?"))
    assert (result.endpoint, result.attempts) == (good, 2)
    assert [name for name, _ in log] == ["faulty", "good-b"]


def test_a_stream_dropped_after_tokens_is_a_partial_failure_and_not_retried(
    sims: dict[str, SimProcess], faulty: SimProcess
) -> None:
    faulty.set_faults(die_mid_stream_rate=1.0)
    good = sims["good-a"].endpoint
    log: list[tuple[str, str]] = []
    with _recording_pool(
        [faulty.endpoint, good], log, strategy=FixedOrder("faulty", "good-a")
    ) as p:
        call = _Call(p, _request(good, "tell me everything"))
        call.run()  # on this thread
        assert _in_flight(p, "faulty") == 0
    assert isinstance(call.error, PartialFailure)
    assert call.results == []
    assert call.items and _text(call.items) == call.error.partial_text
    assert call.error.endpoint == faulty.endpoint
    assert log == [("faulty", "tell me everything")]


def test_a_non_streamed_reply_cut_short_fails_over_since_nothing_was_shown(
    sims: dict[str, SimProcess], faulty: SimProcess
) -> None:
    faulty.set_faults(die_mid_stream_rate=1.0)
    good = sims["good-b"].endpoint
    with Pool(
        [faulty.endpoint, good], strategy=FixedOrder("faulty", "good-b"), timeouts=TIMEOUTS
    ) as pool:
        result = pool.chat(_request(good, "whole answer"), stream=False)
    assert (result.endpoint, result.attempts) == (good, 2)
    assert "You said: whole answer" in result.text


def test_the_breaker_opens_after_repeated_endpoint_down_and_traffic_moves(
    sims: dict[str, SimProcess],
) -> None:
    refusing, good = sims["refusing"].endpoint, sims["good-b"].endpoint
    log: list[tuple[str, str]] = []
    with _recording_pool(
        [refusing, good],
        log,
        strategy=FixedOrder("refusing", "good-b"),
        breaker_factory=lambda: CircuitBreaker(failure_threshold=3, reset_after_s=600),
    ) as pool:
        attempts = [pool.chat(_request(good, f"n{i}")).attempts for i in range(5)]
        assert pool.breaker(refusing).state is BreakerState.OPEN
        assert pool.candidates(_request(good), RouteContext()) == [good]
    # Three failed tries on the refusing endpoint, then it is skipped entirely.
    assert attempts == [2, 2, 2, 1, 1]
    assert [name for name, _ in log].count("refusing") == 3


def test_context_too_long_is_not_retried_and_does_not_count_towards_the_breaker(
    sims: dict[str, SimProcess],
) -> None:
    a, b = sims["good-a"].endpoint, sims["good-b"].endpoint
    log: list[tuple[str, str]] = []
    with _recording_pool(
        [a, b],
        log,
        strategy=FixedOrder("good-a", "good-b"),
        breaker_factory=lambda: CircuitBreaker(failure_threshold=2, reset_after_s=600),
    ) as pool:
        for _ in range(3):
            with pytest.raises(ContextTooLong):
                pool.chat(_request(a, "word " * 1000))
        assert pool.breaker(a).state is BreakerState.CLOSED
        result = pool.chat(_request(a, "short"))
    assert (result.endpoint, result.attempts) == (a, 1)
    assert [name for name, _ in log] == ["good-a"] * 4


# -- streaming ------------------------------------------------------------------------------


def test_stream_deltas_join_up_to_the_final_result(sims: dict[str, SimProcess]) -> None:
    a, b = sims["good-a"].endpoint, sims["good-b"].endpoint
    with Pool([a, b], timeouts=TIMEOUTS) as pool:
        items = list(pool.stream(_request(a, "stream please"), RouteContext(affinity_key="c1")))
        again = pool.chat(_request(a, "stream please"), RouteContext(affinity_key="c1"))
    *deltas, result = items
    assert isinstance(result, ChatResult)
    assert len(deltas) > 1 and all(isinstance(d, TokenDelta) for d in deltas)
    assert _text(deltas) == result.text
    assert "You said: stream please" in result.text
    assert result.completion_tokens > 0
    # Same conversation, same endpoint (its KV cache has the prefix).
    assert again.endpoint == result.endpoint and again.text == result.text


# -- drain ----------------------------------------------------------------------------------


def test_a_draining_endpoint_finishes_its_stream_and_takes_nothing_new(
    sims: dict[str, SimProcess],
) -> None:
    a, b = sims["good-a"].endpoint, sims["good-b"].endpoint
    discovery = _MutableDiscovery([a, b])
    with Pool(discovery, strategy=FixedOrder("good-a", "good-b"), timeouts=TIMEOUTS) as pool:
        stream = pool.stream(_request(a, "long answer"))
        first = next(stream)
        assert isinstance(first, TokenDelta)
        assert _in_flight(pool, "good-a") == 1

        discovery.current = (dataclasses.replace(a, draining=True), b)
        assert pool.candidates(_request(a), RouteContext()) == [b]
        newcomer = pool.chat(_request(a, "new conversation"))
        assert newcomer.endpoint == b
        assert _in_flight(pool, "good-a") == 1  # the old stream is still running there

        rest = list(stream)
        assert _in_flight(pool, "good-a") == 0
        snapshot = pool.snapshot()
    *deltas, result = rest
    assert isinstance(result, ChatResult)
    assert result.endpoint.name == "good-a"
    assert first.text + _text(deltas) == result.text
    assert "You said: long answer" in result.text
    assert [s.endpoint.draining for s in snapshot] == [True, False]


# -- saturation, priority and fairness through the pool -------------------------------------


def _one_slot(sims: dict[str, SimProcess]) -> Endpoint:
    return dataclasses.replace(sims["good-a"].endpoint, max_concurrency=1)


def _queue_calls(
    pool: Pool, endpoint: Endpoint, specs: Sequence[tuple[str, RouteContext]]
) -> list[_Call]:
    """Start calls one by one, each only once the previous is queued: arrival order is
    exactly the order given."""
    calls = []
    for text, ctx in specs:
        waiting = pool.admission.waiting
        call = _Call(pool, _request(endpoint, text), ctx)
        call.start()
        wait_until(lambda w=waiting: pool.admission.waiting == w + 1, JOIN_S, f"{text} queued")
        calls.append(call)
    return calls


def test_a_saturated_pool_refuses_beyond_its_queue_and_serves_the_queued(
    sims: dict[str, SimProcess],
) -> None:
    endpoint = _one_slot(sims)
    with Pool([endpoint], max_queue=2, timeouts=TIMEOUTS) as pool:
        held = _hold_a_stream(pool, _request(endpoint, "holding the only slot"))
        queued = _queue_calls(
            pool, endpoint, [("queued 0", RouteContext()), ("queued 1", RouteContext())]
        )
        # Its deadline is a minute away: only a full queue makes it return promptly.
        refused = _Call(pool, _request(endpoint, "one too many"), RouteContext(deadline_s=60))
        refused.start()
        refused.join(JOIN_S)
        assert not refused.is_alive()
        assert isinstance(refused.error, Busy)
        assert refused.items == []
        assert pool.admission.waiting == 2

        assert isinstance(list(held)[-1], ChatResult)
        for call in queued:
            call.join(JOIN_S)
        assert _in_flight(pool, endpoint.name) == 0
    for i, call in enumerate(queued):
        result = call.result()
        assert f"You said: queued {i}" in result.text
        assert result.queued_ms > 0


def test_the_pool_serves_realtime_then_chat_then_batch_when_saturated(
    sims: dict[str, SimProcess],
) -> None:
    endpoint = _one_slot(sims)
    log: list[tuple[str, str]] = []
    with _recording_pool([endpoint], log) as pool:
        held = _hold_a_stream(pool, _request(endpoint, "hold"))
        calls = _queue_calls(
            pool,
            endpoint,
            [
                ("batch", RouteContext(tenant="t", priority=Priority.BATCH)),
                ("chat", RouteContext(tenant="t", priority=Priority.CHAT)),
                ("realtime", RouteContext(tenant="t", priority=Priority.REALTIME)),
            ],
        )
        list(held)
        for call in calls:
            call.join(JOIN_S)
    assert [text for _, text in log] == ["hold", "realtime", "chat", "batch"]
    assert all(call.result() for call in calls)


def test_the_pool_keeps_one_tenants_burst_from_starving_another(
    sims: dict[str, SimProcess],
) -> None:
    endpoint = _one_slot(sims)
    log: list[tuple[str, str]] = []
    with _recording_pool([endpoint], log) as pool:
        held = _hold_a_stream(pool, _request(endpoint, "hold"))
        burst = [(f"a{i}", RouteContext(tenant="A")) for i in range(8)]
        late = [(f"b{i}", RouteContext(tenant="B")) for i in range(2)]
        calls = _queue_calls(pool, endpoint, burst + late)
        list(held)
        for call in calls:
            call.join(JOIN_S)
    order = [text for _, text in log][1:]
    assert {"b0", "b1"} <= set(order[:4]), order
    assert [t for t in order if t.startswith("a")] == [f"a{i}" for i in range(8)]
    assert all(call.result() for call in calls)


def test_errors_from_the_pool_are_always_typed(sims: dict[str, SimProcess]) -> None:
    # A request the server rejects surfaces as an InferenceError, never a raw httpx error.
    a = sims["good-a"].endpoint
    bad = dataclasses.replace(_request(a), model="no/such-model")
    wrong_model_endpoint = dataclasses.replace(a, model="no/such-model")
    with (
        Pool([wrong_model_endpoint], timeouts=TIMEOUTS) as pool,
        pytest.raises(InferenceError) as caught,
    ):
        pool.chat(bad)
    assert caught.value.status_code == 404
