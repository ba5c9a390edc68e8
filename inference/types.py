"""Value types and the typed error hierarchy shared by the client and the pool.

Every failure the client can see is mapped onto one `InferenceError` subclass whose
`retryable` class attribute answers a single question for the caller: could another
endpoint serving the same model plausibly succeed with the same request?
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Endpoint:
    """One OpenAI-compatible (vLLM) server; `url` is the base, without `/v1`.

    `weight` scales its share of traffic (a node with two GPUs behind one server may take
    twice the load); `max_concurrency` bounds the requests this process sends it at once;
    a `draining` endpoint finishes what it has and takes nothing new.
    """

    name: str
    url: str
    model: str
    weight: float = 1.0
    max_concurrency: int = 32
    draining: bool = False


class Priority(enum.IntEnum):
    """Lower value is served first when the pool is saturated."""

    REALTIME = 0  # voice: a speaker is waiting with an open microphone
    CHAT = 1
    BATCH = 2


@dataclass(frozen=True)
class ChatRequest:
    """A chat completion request; `messages` are OpenAI-style role/content dicts."""

    model: str
    messages: tuple[dict[str, str], ...] | list[dict[str, str]]
    max_tokens: int
    temperature: float
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class RouteContext:
    """Who is asking, for routing and admission: not sent to the model server."""

    affinity_key: str = ""
    tenant: str = ""
    priority: Priority = Priority.CHAT
    # A routing strategy name for this request (e.g. a bot's setting); "" uses the
    # pool's default.
    strategy: str = ""
    # Seconds the whole call (queueing, every failover attempt) may take; None: the
    # client's own total timeout.
    deadline_s: float | None = None


@dataclass(frozen=True)
class TokenDelta:
    """A piece of streamed output text."""

    text: str


@dataclass(frozen=True)
class EngineStats:
    """What an endpoint's /health and /metrics said at its last scrape."""

    healthy: bool
    running: float = 0.0
    waiting: float = 0.0
    kv_cache_usage: float = 0.0
    prefix_cache_hit_rate: float | None = None
    error: str = ""
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ChatResult:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float
    latency_ms: float
    endpoint: Endpoint
    # Seconds spent waiting for admission before the first attempt, and endpoints tried.
    queued_ms: float = 0.0
    attempts: int = 1


@dataclass(frozen=True)
class Timeouts:
    """Deadlines in seconds.

    `first_token` bounds the wait for the first content token of a stream (and, because a
    stall mid-stream is indistinguishable from a slow start, the longest silence tolerated
    between two network reads); `total` bounds the whole request.
    """

    connect: float = 2.0
    first_token: float = 30.0
    total: float = 120.0


class InferenceError(Exception):
    """Base of all inference failures; `endpoint` is None when no single one is to blame."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        endpoint: Endpoint | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.endpoint = endpoint
        self.status_code = status_code

    def __str__(self) -> str:
        if self.endpoint is None:
            return self.message
        return f"{self.message} [endpoint {self.endpoint.name} {self.endpoint.url}]"


class EndpointDown(InferenceError):
    """The connection was refused or reset before a response began."""

    retryable = True


class Overloaded(InferenceError):
    """The server answered 429 or 503: it is up but shedding load."""

    retryable = True


class InferenceTimeout(InferenceError):
    """A connect, first-token or total deadline passed before any token arrived."""

    retryable = True


class BadResponse(InferenceError):
    """A 5xx, or a body that does not parse as the OpenAI/vLLM wire format."""

    retryable = True


class ContextTooLong(InferenceError):
    """The prompt, or `max_tokens`, exceeds the model's context; every replica would agree."""

    retryable = False


class RequestRejected(InferenceError):
    """Any other 4xx (including 404 for an unknown model); resending would not help."""

    retryable = False


class PartialFailure(InferenceError):
    """The stream broke after tokens reached the caller.

    Not retryable because the caller may already have shown `partial_text` to a user;
    silently restarting elsewhere would produce a different, duplicated answer.
    """

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        partial_text: str,
        endpoint: Endpoint | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message, endpoint=endpoint, status_code=status_code)
        self.partial_text = partial_text


class Busy(InferenceError):
    """Admission refused: every endpoint is at its concurrency budget and the wait queue
    is full, or the request's deadline passed while it waited. Try again later."""

    retryable = False


class PoolUnavailable(InferenceError):
    """No endpoint could serve the request; `attempts` holds each endpoint's failure."""

    retryable = False

    def __init__(
        self,
        attempts: Sequence[InferenceError] = (),
        message: str | None = None,
    ) -> None:
        self.attempts: list[InferenceError] = list(attempts)
        if message is None:
            if self.attempts:
                detail = "; ".join(f"{type(a).__name__}: {a}" for a in self.attempts)
                message = f"all {len(self.attempts)} endpoint(s) failed: {detail}"
            else:
                message = "no endpoints configured"
        super().__init__(message)
