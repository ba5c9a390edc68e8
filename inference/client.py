"""Synchronous client for one vLLM (OpenAI-compatible) endpoint.

All failures surface as `inference.types.InferenceError` subclasses so that callers (and
`inference.pool.Pool`) can decide on failover without knowing about httpx.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Self

import httpx
from httpx_sse import EventSource, SSEError

from inference.types import (
    BadResponse,
    ChatRequest,
    ChatResult,
    Endpoint,
    InferenceError,
    InferenceTimeout,
    Timeouts,
    TokenDelta,
)
from inference.wire import (
    CHAT_PATH,
    STREAM_HEADERS,
    StreamState,
    Wire,
    chat_payload,
    effective_timeouts,
    httpx_timeout,
    tokenize_payload,
)


class _DeadlineStream(httpx.SyncByteStream):
    """Checks deadlines on every network chunk.

    httpx's read timeout restarts on each received byte, and SSE parsing only yields on
    complete events, so a server trickling bytes could otherwise hold us forever.
    """

    def __init__(self, inner: httpx.SyncByteStream, check: Callable[[], None]) -> None:
        self._inner = inner
        self._check = check

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            self._check()
            yield chunk

    def close(self) -> None:
        self._inner.close()


def _guard(response: httpx.Response, check: Callable[[], None]) -> None:
    if not isinstance(response.stream, httpx.SyncByteStream):
        raise TypeError("VLLMClient needs a synchronous transport")
    response.stream = _DeadlineStream(response.stream, check)


class VLLMClient:
    def __init__(
        self,
        endpoint: Endpoint,
        *,
        timeouts: Timeouts = Timeouts(),
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        # `clock` is injectable so deadline behaviour can be tested without real waiting.
        self.endpoint = endpoint
        self.timeouts = timeouts
        self._clock = clock
        self._wire = Wire(endpoint)
        self._http = httpx.Client(
            base_url=endpoint.url,
            transport=transport,
            timeout=httpx_timeout(timeouts, streaming=False),
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
        self._http.close()

    # -- simple endpoints -----------------------------------------------------------------

    def health(self) -> bool:
        """True only for a 200 from `/health`; never raises, since "down" is the answer."""
        try:
            return self._http.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    def models(self) -> list[str]:
        return self._wire.parse_models(self._json("GET", "/v1/models"))

    def metrics_text(self) -> str:
        return self._request("GET", "/metrics").text

    def tokenize(
        self,
        model: str,
        *,
        messages: list[dict[str, str]] | None = None,
        prompt: str | None = None,
    ) -> list[int]:
        """Token ids as the server's tokenizer (and chat template, for messages) sees them."""
        body = self._json("POST", "/tokenize", json=tokenize_payload(model, messages, prompt))
        return self._wire.parse_tokenize(body)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._wire.transport_error(exc) from exc
        if response.status_code != 200:
            raise self._wire.status_error(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise BadResponse(f"{path} returned invalid JSON", endpoint=self.endpoint) from exc

    # -- chat -----------------------------------------------------------------------------

    def chat(
        self, request: ChatRequest, *, stream: bool = True, budget_s: float | None = None
    ) -> ChatResult:
        """One completion. `budget_s` caps every deadline to what a caller has left."""
        if not stream:
            return self._chat_once(request, effective_timeouts(self.timeouts, budget_s))
        for item in self.stream_chat(request, budget_s=budget_s):
            if isinstance(item, ChatResult):
                return item
        raise BadResponse("stream produced no result", endpoint=self.endpoint)  # unreachable

    def stream_chat(
        self, request: ChatRequest, *, budget_s: float | None = None
    ) -> Iterator[TokenDelta | ChatResult]:
        """Yield text as it is generated, then one final `ChatResult` with usage/timings.

        A failure after the first `TokenDelta` is a `PartialFailure`: the caller may have
        shown the text already, so nobody may silently start over.
        """
        timeouts = effective_timeouts(self.timeouts, budget_s)
        state = StreamState(started=self._clock())
        wire = self._wire
        try:
            with self._http.stream(
                "POST",
                CHAT_PATH,
                json=chat_payload(request, stream=True),
                headers=STREAM_HEADERS,
                timeout=httpx_timeout(timeouts, streaming=True),
            ) as response:
                if response.status_code != 200:
                    response.read()
                    raise wire.status_error(response)
                _guard(
                    response,
                    lambda: wire.check_stream_deadlines(state, timeouts, self._clock()),
                )
                for event in EventSource(response).iter_sse():
                    for piece in wire.consume(event.data, state, self._clock()):
                        yield TokenDelta(piece)
                    if state.done:
                        break
        except InferenceError as exc:
            converted = wire.after_tokens(exc, state)
            if converted is exc:
                raise
            raise converted from exc
        except SSEError as exc:
            error = BadResponse(f"not an event stream: {exc}", endpoint=self.endpoint)
            raise wire.after_tokens(error, state) from exc
        except httpx.HTTPError as exc:
            raise wire.after_tokens(wire.transport_error(exc), state) from exc
        yield wire.finish_stream(state, self._clock())

    def _chat_once(self, request: ChatRequest, timeouts: Timeouts) -> ChatResult:
        started = self._clock()

        def check() -> None:
            if self._clock() - started > timeouts.total:
                raise InferenceTimeout(
                    f"no complete response within {timeouts.total:g}s", endpoint=self.endpoint
                )

        try:
            with self._http.stream(
                "POST",
                CHAT_PATH,
                json=chat_payload(request, stream=False),
                timeout=httpx_timeout(timeouts, streaming=False),
            ) as response:
                _guard(response, check)
                response.read()
        except httpx.HTTPError as exc:
            raise self._wire.transport_error(exc) from exc
        if response.status_code != 200:
            raise self._wire.status_error(response)
        return self._wire.parse_completion(response, (self._clock() - started) * 1000.0)
