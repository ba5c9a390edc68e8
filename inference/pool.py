"""The GPU pool: routing, health, circuit breaking, admission and failover.

One `Pool` per process. For every request it:
1. takes the endpoints serving the model that are healthy, not draining, whose breaker
   allows traffic and that this request has not tried yet;
2. ranks them with the routing strategy (session affinity by default);
3. waits for a slot in admission control (bounded per-endpoint concurrency, a bounded
   queue served by priority and fair across tenants);
4. sends the request; a failure before the first token that another replica could
   survive moves on to the next endpoint within the request's deadline. A stream that
   fails after tokens were yielded raises `PartialFailure` and is never restarted.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from inference.aclient import AsyncVLLMClient
from inference.admission import AdmissionController, NoCandidates, Slot
from inference.breaker import BreakerState, CircuitBreaker
from inference.client import VLLMClient
from inference.discovery import Discovery, StaticDiscovery
from inference.strategies import (
    Candidate,
    RoutingStrategy,
    SessionAffinity,
    admissible,
    strategy_by_name,
)
from inference.types import (
    Busy,
    ChatRequest,
    ChatResult,
    Endpoint,
    EngineStats,
    InferenceError,
    InferenceTimeout,
    PartialFailure,
    PoolUnavailable,
    RouteContext,
    Timeouts,
    TokenDelta,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EndpointStatus:
    endpoint: Endpoint
    in_flight: int
    breaker: BreakerState
    stats: EngineStats | None


class Pool:
    def __init__(
        self,
        discovery: Discovery | Sequence[Endpoint],
        *,
        strategy: RoutingStrategy | None = None,
        client_factory: Callable[[Endpoint], VLLMClient] | None = None,
        aclient_factory: Callable[[Endpoint], AsyncVLLMClient] | None = None,
        timeouts: Timeouts = Timeouts(),
        max_queue: int = 1024,
        breaker_factory: Callable[[], CircuitBreaker] = CircuitBreaker,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._discovery: Discovery = (
            StaticDiscovery(discovery) if isinstance(discovery, Sequence) else discovery
        )
        self.strategy: RoutingStrategy = strategy or SessionAffinity()
        self.timeouts = timeouts
        self._client_factory: Callable[[Endpoint], VLLMClient] = client_factory or (
            lambda endpoint: VLLMClient(endpoint, timeouts=timeouts)
        )
        self._aclient_factory: Callable[[Endpoint], AsyncVLLMClient] = aclient_factory or (
            lambda endpoint: AsyncVLLMClient(endpoint, timeouts=timeouts)
        )
        self._breaker_factory = breaker_factory
        self._clock = clock
        self._lock = threading.Lock()
        # Keyed by URL: a change of weight or draining flag is the same server.
        self._clients: dict[str, VLLMClient] = {}
        self._aclients: dict[str, AsyncVLLMClient] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self._stats: dict[str, EngineStats] = {}
        # Strategies keep state (round-robin counters, ring caches): one per name.
        self._strategies: dict[str, RoutingStrategy] = {self.strategy.name: self.strategy}
        self.admission = AdmissionController(
            max_queue=max_queue, claim=lambda e: self.breaker(e).try_acquire(), clock=clock
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
            # Async clients close with their event loop's sessions (`aclose` closes them
            # from inside the loop); here they are only forgotten.
            self._aclients.clear()
        for client in clients:
            client.close()

    async def aclose(self) -> None:
        with self._lock:
            aclients = list(self._aclients.values())
            self._aclients.clear()
        for aclient in aclients:
            await aclient.aclose()
        self.close()

    # -- state ----------------------------------------------------------------------------

    def endpoints(self) -> list[Endpoint]:
        return list(self._discovery.endpoints())

    def breaker(self, endpoint: Endpoint) -> CircuitBreaker:
        # Read without the lock (a dict lookup is atomic); lock only to create, so the hot
        # path of every request does not contend (see BENCHMARKS.md, router overhead).
        breaker = self._breakers.get(endpoint.url)
        if breaker is not None:
            return breaker
        with self._lock:
            breaker = self._breakers.get(endpoint.url)
            if breaker is None:
                breaker = self._breakers[endpoint.url] = self._breaker_factory()
            return breaker

    def update_stats(self, endpoint: Endpoint, stats: EngineStats, *, kick: bool = True) -> None:
        """Feed in a health/metrics observation (from a `HealthMonitor` or elsewhere).

        `kick=False` is for callers that may run inside admission (a discovery refreshed
        while ranking): dispatching from there would re-enter the admission lock.
        """
        with self._lock:
            self._stats[endpoint.url] = stats
        if kick:
            # Recovered capacity may let queued requests through.
            self.admission.kick()

    def stats(self, endpoint: Endpoint) -> EngineStats | None:
        # Stats are replaced whole, never mutated, so a lock-free read sees one or the other.
        return self._stats.get(endpoint.url)

    def snapshot(self) -> list[EndpointStatus]:
        return [
            EndpointStatus(
                endpoint=e,
                in_flight=self.admission.in_flight(e),
                breaker=self.breaker(e).state,
                stats=self.stats(e),
            )
            for e in self.endpoints()
        ]

    # -- routing --------------------------------------------------------------------------

    def candidates(
        self, request: ChatRequest, ctx: RouteContext, exclude: frozenset[str] = frozenset()
    ) -> list[Endpoint]:
        """Endpoints that may take this request now, best first."""
        usable: list[Candidate] = []
        for endpoint in self.endpoints():
            if endpoint.model != request.model or endpoint.draining or endpoint.url in exclude:
                continue
            stats = self.stats(endpoint)
            if stats is not None and not stats.healthy:
                continue
            if not self.breaker(endpoint).available():
                continue
            usable.append(
                Candidate(
                    endpoint=endpoint,
                    in_flight=self.admission.in_flight(endpoint),
                    waiting=stats.waiting if stats else 0.0,
                    kv_cache_usage=stats.kv_cache_usage if stats else 0.0,
                )
            )
        strategy = self._strategy(ctx.strategy)
        return [c.endpoint for c in admissible(strategy, strategy.rank(usable, ctx), ctx)]

    def _strategy(self, name: str) -> RoutingStrategy:
        if not name:
            return self.strategy
        with self._lock:
            strategy = self._strategies.get(name)
            if strategy is None:
                strategy = self._strategies[name] = strategy_by_name(name)
            return strategy

    # -- requests -------------------------------------------------------------------------

    def chat(
        self, request: ChatRequest, ctx: RouteContext = RouteContext(), *, stream: bool = True
    ) -> ChatResult:
        items = self.stream(request, ctx) if stream else self.run(request, ctx, stream=False)
        for item in items:
            if isinstance(item, ChatResult):
                return item
        raise PoolUnavailable(message="no result")  # unreachable: streams end with a result

    def stream(
        self, request: ChatRequest, ctx: RouteContext = RouteContext()
    ) -> Iterator[TokenDelta | ChatResult]:
        """Yield tokens as they arrive from whichever endpoint serves the request, then
        one `ChatResult`."""
        return self.run(request, ctx, stream=True)

    def run(
        self, request: ChatRequest, ctx: RouteContext, *, stream: bool
    ) -> Iterator[TokenDelta | ChatResult]:
        """`stream()` with a choice: `stream=False` asks each endpoint for one JSON
        response, so nothing but the final `ChatResult` is yielded."""
        call = _Call(self, request, ctx)
        while True:
            try:
                slot = self.admission.acquire(call.ranker(), ctx, call.deadline)
            except (NoCandidates, Busy) as exc:
                raise call.refused(exc) from None
            endpoint, breaker, budget = call.granted(slot)
            client = self._client(endpoint)
            recorded = False
            try:
                if stream:
                    items: Iterator[TokenDelta | ChatResult] = client.stream_chat(
                        request, budget_s=budget
                    )
                else:
                    items = iter([client.chat(request, stream=False, budget_s=budget)])
                for item in items:
                    if isinstance(item, ChatResult):
                        breaker.record_success()
                        recorded = True
                        # Free the slot before handing over the result: a caller that
                        # stops iterating here would otherwise hold it until GC.
                        slot.release()
                        yield call.result(item)
                        return
                    yield item
            except PartialFailure:
                breaker.record_failure()
                recorded = True
                raise
            except InferenceError as exc:
                recorded = True
                if call.failed(exc, endpoint, breaker):
                    raise PoolUnavailable(call.attempts) from exc
            finally:
                if not recorded:
                    # Abandoned by the caller (or an unexpected error): no verdict on the
                    # endpoint, but a half-open breaker's probe must not stay taken.
                    breaker.release()
                slot.release()

    async def achat(
        self, request: ChatRequest, ctx: RouteContext = RouteContext(), *, stream: bool = True
    ) -> ChatResult:
        """`chat` for asyncio callers."""
        async for item in self.arun(request, ctx, stream=stream):
            if isinstance(item, ChatResult):
                return item
        raise PoolUnavailable(message="no result")  # unreachable: streams end with a result

    async def arun(
        self, request: ChatRequest, ctx: RouteContext, *, stream: bool
    ) -> AsyncIterator[TokenDelta | ChatResult]:
        """`run` for asyncio callers: the same admission queue, breakers and failover,
        with the endpoint's `AsyncVLLMClient`; nothing blocks the event loop.

        The endpoints come from the discovery as `run` reads them: a discovery that loads
        them from somewhere slow must not do so on the event loop (see
        `switchboard.pool.runtime.DatabaseDiscovery`)."""
        call = _Call(self, request, ctx)
        while True:
            try:
                slot = await self.admission.acquire_async(call.ranker(), ctx, call.deadline)
            except (NoCandidates, Busy) as exc:
                raise call.refused(exc) from None
            endpoint, breaker, budget = call.granted(slot)
            client = self._aclient(endpoint)
            recorded = False
            try:
                if stream:
                    items = client.stream_chat(request, budget_s=budget)
                else:
                    items = _one(client.chat(request, stream=False, budget_s=budget))
                async for item in items:
                    if isinstance(item, ChatResult):
                        breaker.record_success()
                        recorded = True
                        slot.release()
                        yield call.result(item)
                        return
                    yield item
            except PartialFailure:
                breaker.record_failure()
                recorded = True
                raise
            except InferenceError as exc:
                recorded = True
                if call.failed(exc, endpoint, breaker):
                    raise PoolUnavailable(call.attempts) from exc
            finally:
                if not recorded:
                    breaker.release()
                slot.release()

    def _unavailable(self, request: ChatRequest, attempts: list[InferenceError]) -> PoolUnavailable:
        if attempts:
            return PoolUnavailable(attempts)
        endpoints = self.endpoints()
        serving = [e for e in endpoints if e.model == request.model]
        if not endpoints:
            return PoolUnavailable(message="no inference endpoints are configured")
        if not serving:
            served = sorted({e.model for e in endpoints})
            return PoolUnavailable(
                message=f"no endpoint serves model {request.model!r} (configured: {served})"
            )
        return PoolUnavailable(
            message=f"none of the {len(serving)} endpoint(s) serving {request.model!r} is "
            "available (unhealthy, draining or circuit open)"
        )

    def _client(self, endpoint: Endpoint) -> VLLMClient:
        client = self._clients.get(endpoint.url)
        if client is not None:
            return client
        with self._lock:
            client = self._clients.get(endpoint.url)
            if client is None:
                client = self._clients[endpoint.url] = self._client_factory(endpoint)
            return client

    def _aclient(self, endpoint: Endpoint) -> AsyncVLLMClient:
        client = self._aclients.get(endpoint.url)
        if client is not None:
            return client
        with self._lock:
            client = self._aclients.get(endpoint.url)
            if client is None:
                client = self._aclients[endpoint.url] = self._aclient_factory(endpoint)
            return client


async def _one(result: Awaitable[ChatResult]) -> AsyncIterator[ChatResult]:
    yield await result


class _Call:
    """One request's way through the pool: the bookkeeping `run` and `arun` share
    (deadline, endpoints tried, failures, time queued), apart from their I/O."""

    def __init__(self, pool: Pool, request: ChatRequest, ctx: RouteContext) -> None:
        self.pool = pool
        self.request = request
        self.ctx = ctx
        budget = ctx.deadline_s if ctx.deadline_s is not None else pool.timeouts.total
        self.deadline = pool._clock() + budget
        self.tried: set[str] = set()
        self.attempts: list[InferenceError] = []
        self.queued_s = 0.0

    def ranker(self) -> Callable[[], list[Endpoint]]:
        exclude = frozenset(self.tried)
        return lambda: self.pool.candidates(self.request, self.ctx, exclude)

    def refused(self, exc: NoCandidates | Busy) -> InferenceError:
        """What to raise when admission gives no slot."""
        if isinstance(exc, NoCandidates):
            return self.pool._unavailable(self.request, self.attempts)
        if not self.attempts:
            return exc
        # Failing over found no free capacity in time: report what was tried.
        return PoolUnavailable([*self.attempts, exc])

    def granted(self, slot: Slot) -> tuple[Endpoint, CircuitBreaker, float]:
        """The slot's endpoint, its breaker and the time left for the attempt."""
        self.queued_s += slot.waited_s
        self.tried.add(slot.endpoint.url)
        budget = self.deadline - self.pool._clock()
        return slot.endpoint, self.pool.breaker(slot.endpoint), budget

    def result(self, item: ChatResult) -> ChatResult:
        return dataclasses.replace(item, queued_ms=self.queued_s * 1000.0, attempts=len(self.tried))

    def failed(self, exc: InferenceError, endpoint: Endpoint, breaker: CircuitBreaker) -> bool:
        """Judge an endpoint by a failure before the first token. Re-raises what no other
        endpoint would answer differently; True when the deadline leaves no time to fail
        over, False to try the next endpoint."""
        if not exc.retryable:
            # The request's own fault (e.g. context too long): the endpoint is fine.
            breaker.release()
            raise exc
        late = self.pool._clock() >= self.deadline
        if isinstance(exc, InferenceTimeout) and late:
            # The caller's own deadline ran out: no verdict on the endpoint.
            breaker.release()
        else:
            breaker.record_failure()
        self.attempts.append(exc)
        logger.warning(
            "endpoint %s failed before the first token (%s: %s); failing over",
            endpoint.name,
            type(exc).__name__,
            exc.message,
        )
        return self.pool._clock() >= self.deadline
