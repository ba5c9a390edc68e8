"""The Standard Webhooks example retry schedule for tenant callbacks."""

from __future__ import annotations

import random

import pytest

from connectors.webhook.schedule import (
    RETRY_SCHEDULE_S,
    TOTAL_RETRY_SPAN_S,
    max_attempts,
    next_delay,
)


def test_schedule_is_the_spec_example():
    assert RETRY_SCHEDULE_S == (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
    assert TOTAL_RETRY_SPAN_S == sum(RETRY_SCHEDULE_S) == 272_105
    assert TOTAL_RETRY_SPAN_S >= 24 * 3600
    assert max_attempts() == 10


def test_without_jitter_delays_follow_the_schedule():
    got = [next_delay(n, jitter=0) for n in range(1, max_attempts())]
    assert got == list(RETRY_SCHEDULE_S)


def test_exhausted_after_the_last_attempt():
    assert next_delay(max_attempts() - 1) is not None
    assert next_delay(max_attempts()) is None
    assert next_delay(max_attempts() + 5) is None


@pytest.mark.parametrize("seed", range(50))
def test_jitter_stays_within_bounds(seed):
    rng = random.Random(seed)
    for attempt, base in enumerate(RETRY_SCHEDULE_S, start=1):
        delay = next_delay(attempt, rng=rng, jitter=0.1)
        assert base * 0.9 <= delay <= base * 1.1


def test_jitter_is_reproducible_with_a_seeded_rng_and_actually_varies():
    a = [next_delay(3, rng=random.Random(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    rng = random.Random(7)
    spread = {next_delay(3, rng=rng) for _ in range(20)}
    assert len(spread) > 1


def test_default_rng_is_within_bounds():
    delay = next_delay(1)
    assert delay is not None and 4.5 <= delay <= 5.5


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempt_counts_from_one(attempt):
    with pytest.raises(ValueError, match="starts at 1"):
        next_delay(attempt)


@pytest.mark.parametrize("jitter", [-0.1, 1.0, 2.0])
def test_jitter_must_be_a_fraction(jitter):
    with pytest.raises(ValueError, match="jitter"):
        next_delay(1, jitter=jitter)
