"""When to retry a failed tenant callback: the Standard Webhooks example schedule.

This replaces pure exponential backoff for tenant callbacks. The spec recommends this
schedule, and it keeps retrying for days rather than minutes, so a receiver that is down
overnight or for a weekend deploy still gets its events. Each delay counts from the failure
of the attempt before it (the Svix reading of the spec's list):

    attempt 1 immediately, then waits of 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h

That is 10 attempts; the waits add up to 272 105 s (75 h 35 min 5 s, about 3 days 3.6 h),
well beyond the one day the spec asks a schedule to span. Jitter keeps many callbacks that
failed together (one tenant outage) from all coming back in the same second.
"""

from __future__ import annotations

import random

RETRY_SCHEDULE_S: tuple[int, ...] = (
    5,
    5 * 60,
    30 * 60,
    2 * 3600,
    5 * 3600,
    10 * 3600,
    14 * 3600,
    20 * 3600,
    24 * 3600,
)
TOTAL_RETRY_SPAN_S = sum(RETRY_SCHEDULE_S)  # 272_105 s before jitter


def max_attempts() -> int:
    """Attempts in all, the immediate one included."""
    return 1 + len(RETRY_SCHEDULE_S)


def next_delay(
    attempt: int, *, rng: random.Random | None = None, jitter: float = 0.1
) -> float | None:
    """Seconds to wait after `attempt` attempts have failed; None when they are exhausted.

    `attempt` counts attempts already made, so it starts at 1 (the immediate one). With
    Celery, whose `request.retries` counts retries already made, pass `retries + 1`. The
    delay is spread uniformly over ±`jitter` of the scheduled value.
    """
    if attempt < 1:
        raise ValueError("attempt counts attempts already made and starts at 1")
    if not 0 <= jitter < 1:
        raise ValueError("jitter is a fraction of the delay in [0, 1)")
    if attempt > len(RETRY_SCHEDULE_S):
        return None
    base = RETRY_SCHEDULE_S[attempt - 1]
    # A fresh generator per call rather than a shared module-level one. Jitter only
    # spreads load and guards no secret, so a non-cryptographic generator is right.
    rng = rng or random.Random()  # noqa: S311
    return base * (1 + rng.uniform(-jitter, jitter))
