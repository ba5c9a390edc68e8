"""Pool.arun / Pool.achat: the asyncio path shares the sync path's admission queue,
breakers and failover rules. Real HTTP throughout: the simulator, a closed port and
canned servers. Each test runs its own event loop with asyncio.run."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable

import pytest

from inference import (
    BreakerState,
    Busy,
    ChatRequest,
    ChatResult,
    Endpoint,
    PartialFailure,
    Pool,
    RequestRejected,
    RouteContext,
    TokenDelta,
)
from tests.inference.support import SSE_HEADERS, CannedServer, FixedOrder, wait_until

SseBuilder = Callable[..., bytes]


def _request(endpoint: Endpoint) -> ChatRequest:
    return ChatRequest(
        model=endpoint.model,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=32,
        temperature=0.0,
    )


@pytest.mark.parametrize("stream", [True, False])
def test_a_dead_endpoint_fails_over_to_the_simulator(
    simulator: Endpoint, closed_endpoint: Endpoint, stream: bool
) -> None:
    pool = Pool(
        [closed_endpoint, simulator], strategy=FixedOrder(closed_endpoint.name, simulator.name)
    )

    async def main() -> ChatResult:
        try:
            return await pool.achat(_request(simulator), stream=stream)
        finally:
            await pool.aclose()

    result = asyncio.run(main())
    assert result.endpoint == simulator
    assert result.attempts == 2
    assert "You said: hi" in result.text
    assert pool.admission.in_flight_all() == {closed_endpoint.url: 0, simulator.url: 0}
    # One failure is not enough to open the breaker, but it was counted.
    assert pool.breaker(closed_endpoint).state is BreakerState.CLOSED


def test_a_stream_broken_after_tokens_is_partial_and_not_retried(sse_body: SseBuilder) -> None:
    broken = CannedServer(200, SSE_HEADERS, sse_body(["Half ", "a"], finish_reason=None))
    healthy = CannedServer(200, SSE_HEADERS, sse_body(["never"]))
    first, second = broken.endpoint("broken"), healthy.endpoint("healthy")
    pool = Pool([first, second], strategy=FixedOrder("broken", "healthy"))
    seen: list[str] = []

    async def main() -> None:
        try:
            async for item in pool.arun(_request(first), RouteContext(), stream=True):
                assert isinstance(item, TokenDelta)
                seen.append(item.text)
        finally:
            await pool.aclose()

    try:
        with pytest.raises(PartialFailure) as caught:
            asyncio.run(main())
    finally:
        broken.close()
        healthy.close()
    assert "".join(seen) == caught.value.partial_text == "Half a"
    assert healthy.requests == []
    assert pool.admission.in_flight(first) == 0


def test_a_request_fault_is_raised_without_trying_another_endpoint() -> None:
    body = b'{"error": {"message": "bad temperature", "code": 400}}'
    rejecting = CannedServer(400, {"content-type": "application/json"}, body)
    other = CannedServer(400, {"content-type": "application/json"}, body)
    first, second = rejecting.endpoint("rejecting"), other.endpoint("other")
    pool = Pool([first, second], strategy=FixedOrder("rejecting", "other"))

    async def main() -> None:
        try:
            await pool.achat(_request(first), stream=False)
        finally:
            await pool.aclose()

    try:
        with pytest.raises(RequestRejected):
            asyncio.run(main())
    finally:
        rejecting.close()
        other.close()
    assert len(rejecting.requests) == 1 and other.requests == []
    assert pool.breaker(first).state is BreakerState.CLOSED


def _single_slot(simulator: Endpoint) -> tuple[Pool, Endpoint]:
    endpoint = dataclasses.replace(simulator, max_concurrency=1)
    return Pool([endpoint]), endpoint


def _hold_slot(pool: Pool, endpoint: Endpoint) -> object:
    """Take the endpoint's only slot the way a worker thread's call would."""
    return pool.admission.acquire(lambda: [endpoint], RouteContext(), deadline=float("inf"))


def test_a_coroutine_waits_in_the_queue_threads_use_and_gets_the_freed_slot(
    simulator: Endpoint,
) -> None:
    pool, endpoint = _single_slot(simulator)
    held = _hold_slot(pool, endpoint)

    def free_once_queued() -> None:
        wait_until(lambda: pool.admission.waiting == 1, what="the coroutine to queue")
        held.release()  # type: ignore[attr-defined]

    releaser = threading.Thread(target=free_once_queued)
    releaser.start()

    async def main() -> ChatResult:
        try:
            return await pool.achat(_request(endpoint), stream=False)
        finally:
            await pool.aclose()

    result = asyncio.run(main())
    releaser.join(timeout=10)
    assert "You said: hi" in result.text
    assert result.queued_ms > 0
    assert pool.admission.in_flight(endpoint) == 0 and pool.admission.waiting == 0


def test_a_cancelled_waiter_leaves_the_queue(simulator: Endpoint) -> None:
    pool, endpoint = _single_slot(simulator)
    held = _hold_slot(pool, endpoint)

    async def main() -> None:
        task = asyncio.create_task(pool.achat(_request(endpoint), stream=False))
        while pool.admission.waiting == 0:
            assert not task.done()
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await pool.aclose()

    asyncio.run(main())
    assert pool.admission.waiting == 0
    assert pool.admission.in_flight(endpoint) == 1  # only the held slot
    held.release()  # type: ignore[attr-defined]
    assert pool.admission.in_flight(endpoint) == 0


def test_a_deadline_that_passes_in_the_queue_is_busy(simulator: Endpoint) -> None:
    pool, endpoint = _single_slot(simulator)
    held = _hold_slot(pool, endpoint)

    async def main() -> None:
        try:
            await pool.achat(_request(endpoint), RouteContext(deadline_s=0.2), stream=False)
        finally:
            await pool.aclose()

    with pytest.raises(Busy):
        asyncio.run(main())
    assert pool.admission.waiting == 0
    held.release()  # type: ignore[attr-defined]
