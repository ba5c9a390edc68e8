"""A per-endpoint circuit breaker.

Closed: requests flow, consecutive failures are counted. After `failure_threshold` of
them it opens: the endpoint gets no requests for `reset_after_s`. Then it is half-open:
exactly one probe request is let through; its success closes the breaker, its failure
opens it again. Only failures that say something about the endpoint count — the pool
does not report a 4xx caused by the request itself.

Small and local on purpose: the decision must be instant and per process, and the pool
needs "may I route here?" separately from "record this outcome", which call-wrapping
breaker libraries fold into one.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_threshold: int = 3,
        reset_after_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state()

    def _state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.reset_after_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def available(self) -> bool:
        """Whether routing may consider this endpoint now (does not take the probe)."""
        with self._lock:
            state = self._state()
            return state is BreakerState.CLOSED or (
                state is BreakerState.HALF_OPEN and not self._probe_in_flight
            )

    def try_acquire(self) -> bool:
        """Claim permission to send one request; in half-open state only one wins."""
        with self._lock:
            state = self._state()
            if state is BreakerState.CLOSED:
                return True
            if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
                self._probe_in_flight = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._probe_in_flight = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            half_open = self._state() is BreakerState.HALF_OPEN
            if half_open or self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
            self._probe_in_flight = False

    def release(self) -> None:
        """The request ended with an outcome that says nothing about the endpoint."""
        with self._lock:
            self._probe_in_flight = False
