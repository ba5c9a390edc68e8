"""Asynchronous client for one vLLM endpoint: the same protocol as `VLLMClient`, for
asyncio callers (ASGI views, Channels consumers, async LangChain pipelines)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
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


class _AsyncDeadlineStream(httpx.AsyncByteStream):
    """See `client._DeadlineStream`: deadlines are checked on every received chunk."""

    def __init__(self, inner: httpx.AsyncByteStream, check: Callable[[], None]) -> None:
        self._inner = inner
        self._check = check

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._check()
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def _guard(response: httpx.Response, check: Callable[[], None]) -> None:
    if not isinstance(response.stream, httpx.AsyncByteStream):
        raise TypeError("AsyncVLLMClient needs an asynchronous transport")
    response.stream = _AsyncDeadlineStream(response.stream, check)


class AsyncVLLMClient:
    def __init__(
        self,
        endpoint: Endpoint,
        *,
        timeouts: Timeouts = Timeouts(),
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.endpoint = endpoint
        self.timeouts = timeouts
        self._clock = clock
        self._wire = Wire(endpoint)
        self._http = httpx.AsyncClient(
            base_url=endpoint.url,
            transport=transport,
            timeout=httpx_timeout(timeouts, streaming=False),
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def health(self) -> bool:
        try:
            return (await self._http.get("/health")).status_code == 200
        except httpx.HTTPError:
            return False

    async def models(self) -> list[str]:
        return self._wire.parse_models(await self._json("GET", "/v1/models"))

    async def metrics_text(self) -> str:
        return (await self._request("GET", "/metrics")).text

    async def tokenize(
        self,
        model: str,
        *,
        messages: list[dict[str, str]] | None = None,
        prompt: str | None = None,
    ) -> list[int]:
        payload = tokenize_payload(model, messages, prompt)
        return self._wire.parse_tokenize(await self._json("POST", "/tokenize", json=payload))

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._wire.transport_error(exc) from exc
        if response.status_code != 200:
            raise self._wire.status_error(response)
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise BadResponse(f"{path} returned invalid JSON", endpoint=self.endpoint) from exc

    async def chat(
        self, request: ChatRequest, *, stream: bool = True, budget_s: float | None = None
    ) -> ChatResult:
        if not stream:
            return await self._chat_once(request, effective_timeouts(self.timeouts, budget_s))
        async for item in self.stream_chat(request, budget_s=budget_s):
            if isinstance(item, ChatResult):
                return item
        raise BadResponse("stream produced no result", endpoint=self.endpoint)  # unreachable

    async def stream_chat(
        self, request: ChatRequest, *, budget_s: float | None = None
    ) -> AsyncIterator[TokenDelta | ChatResult]:
        timeouts = effective_timeouts(self.timeouts, budget_s)
        state = StreamState(started=self._clock())
        wire = self._wire
        try:
            async with self._http.stream(
                "POST",
                CHAT_PATH,
                json=chat_payload(request, stream=True),
                headers=STREAM_HEADERS,
                timeout=httpx_timeout(timeouts, streaming=True),
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise wire.status_error(response)
                _guard(
                    response,
                    lambda: wire.check_stream_deadlines(state, timeouts, self._clock()),
                )
                async for event in EventSource(response).aiter_sse():
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

    async def _chat_once(self, request: ChatRequest, timeouts: Timeouts) -> ChatResult:
        started = self._clock()

        def check() -> None:
            if self._clock() - started > timeouts.total:
                raise InferenceTimeout(
                    f"no complete response within {timeouts.total:g}s", endpoint=self.endpoint
                )

        try:
            async with self._http.stream(
                "POST",
                CHAT_PATH,
                json=chat_payload(request, stream=False),
                timeout=httpx_timeout(timeouts, streaming=False),
            ) as response:
                _guard(response, check)
                await response.aread()
        except httpx.HTTPError as exc:
            raise self._wire.transport_error(exc) from exc
        if response.status_code != 200:
            raise self._wire.status_error(response)
        return self._wire.parse_completion(response, (self._clock() - started) * 1000.0)
