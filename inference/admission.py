"""Admission control: a bounded in-flight budget per endpoint, and a bounded wait queue
served by priority (realtime > chat > batch) and, within a priority, round-robin across
tenants, so one tenant's burst cannot starve another's requests.

Slots are handed over directly: when one frees up, the dispatcher picks the next waiter
in service order that can use it and grants it, instead of letting whoever wakes first
barge in. A full queue, or a deadline that passes while waiting, is a `Busy` outcome.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from inference.types import Busy, Endpoint, Priority, RouteContext

# Ranks the endpoints a request may use now, best first (fresh on every call, since load
# and health change while a request waits).
Ranker = Callable[[], Sequence[Endpoint]]


@dataclass(eq=False)
class _Waiter:
    ctx: RouteContext
    rank: Ranker
    # Tells the waiting thread or coroutine that `granted` is set.
    wake: Callable[[], None]
    granted: Endpoint | None = None


class Slot:
    """Permission to send one request to `endpoint`; release exactly once."""

    def __init__(self, controller: AdmissionController, endpoint: Endpoint, waited_s: float):
        self._controller = controller
        self.endpoint = endpoint
        self.waited_s = waited_s
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._controller._release(self.endpoint)


class NoCandidates(Exception):
    """No endpoint could take this request even with free capacity (none healthy, all
    tried, breakers open): waiting would not help."""


class AdmissionController:
    def __init__(
        self,
        *,
        max_queue: int = 1024,
        claim: Callable[[Endpoint], bool] = lambda endpoint: True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_queue = max_queue
        # Asked once for the endpoint about to be granted; may refuse (a half-open
        # breaker lets exactly one probe through).
        self._claim = claim
        self._clock = clock
        # Re-entrant: rankers (e.g. `Pool.candidates`) read `in_flight()` while `acquire`
        # and `_dispatch` hold the lock; a plain Lock deadlocks on the first request.
        self._lock = threading.RLock()
        self._in_flight: dict[str, int] = {}
        # priority -> tenant -> FIFO of waiters; OrderedDict order is the rotation.
        self._queues: dict[Priority, OrderedDict[str, deque[_Waiter]]] = {
            p: OrderedDict() for p in Priority
        }
        self._waiting = 0

    # -- observation ----------------------------------------------------------------------

    def in_flight(self, endpoint: Endpoint) -> int:
        with self._lock:
            return self._in_flight.get(endpoint.url, 0)

    def in_flight_all(self) -> dict[str, int]:
        with self._lock:
            return dict(self._in_flight)

    @property
    def waiting(self) -> int:
        with self._lock:
            return self._waiting

    def waiting_by_priority(self) -> dict[str, int]:
        with self._lock:
            return {
                p.name.lower(): sum(len(q) for q in tenants.values())
                for p, tenants in self._queues.items()
            }

    # -- acquire / release ----------------------------------------------------------------

    def acquire(self, rank: Ranker, ctx: RouteContext, deadline: float) -> Slot:
        """Block until a slot is granted; raise `Busy` or `NoCandidates`."""
        started = self._clock()
        granted = threading.Event()
        waiter = _Waiter(ctx=ctx, rank=rank, wake=granted.set)
        slot = self._grant_or_enqueue(waiter, started)
        if slot is not None:
            return slot
        remaining = deadline - self._clock()
        if remaining > 0:
            granted.wait(remaining)
        return self._settle(waiter, started)

    async def acquire_async(self, rank: Ranker, ctx: RouteContext, deadline: float) -> Slot:
        """`acquire` for asyncio callers: a waiting request holds no thread. The same
        queue, so threads and coroutines are served in one order."""
        started = self._clock()
        loop = asyncio.get_running_loop()
        granted: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            # Called by whichever thread frees the slot, under the controller's lock.
            loop.call_soon_threadsafe(_resolve, granted)

        waiter = _Waiter(ctx=ctx, rank=rank, wake=wake)
        slot = self._grant_or_enqueue(waiter, started)
        if slot is not None:
            return slot
        remaining = deadline - self._clock()
        try:
            if remaining > 0:
                await asyncio.wait_for(granted, remaining)
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            # The caller went away while queued: leave the queue, or hand back a slot
            # granted in the meantime.
            with self._lock:
                endpoint = waiter.granted
                if endpoint is None:
                    self._remove(waiter)
            if endpoint is not None:
                self._release(endpoint)
            raise
        return self._settle(waiter, started)

    def _grant_or_enqueue(self, waiter: _Waiter, started: float) -> Slot | None:
        with self._lock:
            # Rank once: a stateful strategy (round robin) advances on every call, and
            # ranking twice per request made it skip every other endpoint.
            ranked = waiter.rank()
            if not ranked:
                raise NoCandidates
            if self._waiting == 0:
                endpoint = self._grantable(waiter, ranked)
                if endpoint is not None:
                    return self._take(endpoint, started)
            if self._waiting >= self.max_queue:
                raise Busy(
                    f"inference pool is saturated and its wait queue is full "
                    f"({self.max_queue} waiting); retry later"
                )
            self._enqueue(waiter)
            self._dispatch()
        return None

    def _settle(self, waiter: _Waiter, started: float) -> Slot:
        with self._lock:
            if waiter.granted is None:
                self._remove(waiter)
                raise Busy(
                    f"no inference capacity within the request's deadline "
                    f"(waited {self._clock() - started:.1f}s)"
                )
        return Slot(self, waiter.granted, self._clock() - started)

    def _take(self, endpoint: Endpoint, started: float) -> Slot:
        self._in_flight[endpoint.url] = self._in_flight.get(endpoint.url, 0) + 1
        return Slot(self, endpoint, self._clock() - started)

    def _release(self, endpoint: Endpoint) -> None:
        with self._lock:
            self._in_flight[endpoint.url] = max(0, self._in_flight.get(endpoint.url, 0) - 1)
            self._dispatch()

    def kick(self) -> None:
        """Re-run dispatch (e.g. after health or endpoint changes freed capacity)."""
        with self._lock:
            self._dispatch()

    # -- internals (lock held) ------------------------------------------------------------

    def _grantable(
        self, waiter: _Waiter, ranked: Sequence[Endpoint] | None = None
    ) -> Endpoint | None:
        for endpoint in waiter.rank() if ranked is None else ranked:
            if self._in_flight.get(endpoint.url, 0) < endpoint.max_concurrency and self._claim(
                endpoint
            ):
                return endpoint
        return None

    def _enqueue(self, waiter: _Waiter) -> None:
        tenants = self._queues[waiter.ctx.priority]
        tenants.setdefault(waiter.ctx.tenant, deque()).append(waiter)
        self._waiting += 1

    def _remove(self, waiter: _Waiter) -> None:
        tenants = self._queues[waiter.ctx.priority]
        queue = tenants.get(waiter.ctx.tenant)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            self._waiting -= 1
            if not queue:
                del tenants[waiter.ctx.tenant]

    def _dispatch(self) -> None:
        """Grant free slots to waiters: highest priority first, tenants in rotation."""
        progress = True
        while progress and self._waiting:
            progress = False
            for priority in Priority:
                tenants = self._queues[priority]
                for tenant in list(tenants):
                    queue = tenants[tenant]
                    head = queue[0]
                    endpoint = self._grantable(head)
                    if endpoint is None:
                        continue
                    queue.popleft()
                    self._waiting -= 1
                    # Served tenants go to the back of the rotation.
                    del tenants[tenant]
                    if queue:
                        tenants[tenant] = queue
                    self._in_flight[endpoint.url] = self._in_flight.get(endpoint.url, 0) + 1
                    head.granted = endpoint
                    head.wake()
                    progress = True
                    break
                if progress:
                    break


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
