"""CircuitBreaker state machine, driven by an injected clock (no sleeping)."""

from __future__ import annotations

import threading

from inference import BreakerState, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _breaker(clock: FakeClock, threshold: int = 3, reset_after_s: float = 10.0) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=threshold, reset_after_s=reset_after_s, clock=clock)


def _open(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN


def test_opens_after_the_threshold_of_consecutive_failures() -> None:
    breaker = _breaker(FakeClock(), threshold=3)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.available() and breaker.try_acquire()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.available()
    assert not breaker.try_acquire()


def test_a_success_resets_the_consecutive_failure_count() -> None:
    breaker = _breaker(FakeClock(), threshold=3)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN


def test_stays_open_until_the_reset_time_then_is_half_open() -> None:
    clock = FakeClock()
    breaker = _breaker(clock, reset_after_s=10.0)
    _open(breaker)
    clock.advance(9.99)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.try_acquire()
    clock.advance(0.01)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.available()


def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    _open(breaker)
    clock.advance(10.0)
    assert breaker.try_acquire()
    assert not breaker.try_acquire()
    assert not breaker.available()  # routing skips it while the probe is out
    assert breaker.state is BreakerState.HALF_OPEN


def test_only_one_of_many_concurrent_callers_wins_the_probe() -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    _open(breaker)
    clock.advance(10.0)
    start = threading.Barrier(8)
    wins: list[bool] = []
    lock = threading.Lock()

    def contend() -> None:
        start.wait(timeout=10)
        won = breaker.try_acquire()
        with lock:
            wins.append(won)

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(wins) == [False] * 7 + [True]


def test_probe_success_closes_the_breaker() -> None:
    clock = FakeClock()
    breaker = _breaker(clock, threshold=2)
    _open(breaker)
    clock.advance(10.0)
    assert breaker.try_acquire()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.try_acquire() and breaker.try_acquire()
    # Closed afresh: it takes the full threshold again to open it.
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


def test_probe_failure_reopens_for_another_full_reset_period() -> None:
    clock = FakeClock()
    breaker = _breaker(clock, threshold=3, reset_after_s=10.0)
    _open(breaker)
    clock.advance(10.0)
    assert breaker.try_acquire()
    breaker.record_failure()  # one failure is enough in half-open state
    assert breaker.state is BreakerState.OPEN
    assert not breaker.try_acquire()
    clock.advance(9.0)
    assert breaker.state is BreakerState.OPEN
    clock.advance(1.0)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.try_acquire()


def test_release_frees_the_probe_without_counting_as_success_or_failure() -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    _open(breaker)
    clock.advance(10.0)
    assert breaker.try_acquire()
    breaker.release()
    # Still half-open (not closed by a success, not reopened by a failure) ...
    assert breaker.state is BreakerState.HALF_OPEN
    # ... and the next request may probe.
    assert breaker.available()
    assert breaker.try_acquire()
    assert not breaker.try_acquire()


def test_release_in_closed_state_does_not_reset_the_failure_count() -> None:
    breaker = _breaker(FakeClock(), threshold=2)
    breaker.record_failure()
    breaker.release()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
