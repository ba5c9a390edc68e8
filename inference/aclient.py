"""Asynchronous client for one vLLM endpoint: the same protocol as `VLLMClient`, for
asyncio callers (the OpenAI-compatible endpoint, ASGI views, async pipelines).

Built on aiohttp rather than httpx's async client: on the tenant API's hot path httpx's
own request and response layers cost about a millisecond per call on a 2-vCPU machine,
as much as the whole rest of the proxy (BENCHMARKS.md, section 4). The wire format, the
error mapping and the SSE decoding are shared with the sync client: responses are handed
to `inference.wire` and to httpx-sse as `httpx.Response` objects (cheap; no client).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Self

import aiohttp
import httpx
from httpx_sse import EventSource, SSEError

from inference.types import (
    BadResponse,
    ChatRequest,
    ChatResult,
    Endpoint,
    EndpointDown,
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
    tokenize_payload,
)

_JSON_HEADERS = {"Content-Type": "application/json"}
# vLLM (uvicorn) closes idle keep-alive connections after 5 s; reusing one it is closing
# fails the request, so ours are dropped first.
_KEEPALIVE_S = 4.0


def _timeout(timeouts: Timeouts, *, streaming: bool) -> aiohttp.ClientTimeout:
    # On a stream, a silence longer than the first-token deadline is as bad as a slow
    # start (the same rule as `wire.httpx_timeout`).
    read = min(timeouts.first_token, timeouts.total) if streaming else timeouts.total
    return aiohttp.ClientTimeout(total=timeouts.total, connect=timeouts.connect, sock_read=read)


class _Chunks(httpx.AsyncByteStream):
    """An aiohttp body as httpx's stream type, checking deadlines on every network chunk:
    aiohttp's read timeout restarts on each received byte, and SSE parsing only yields
    on complete events, so a server trickling bytes could otherwise hold us forever."""

    def __init__(self, response: aiohttp.ClientResponse, check: Callable[[], None]) -> None:
        self._response = response
        self._check = check

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.content.iter_any():
            self._check()
            yield chunk

    async def aclose(self) -> None:
        self._response.release()


class AsyncVLLMClient:
    def __init__(
        self,
        endpoint: Endpoint,
        *,
        timeouts: Timeouts = Timeouts(),
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.endpoint = endpoint
        self.timeouts = timeouts
        self._clock = clock
        self._wire = Wire(endpoint)
        self._base = endpoint.url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

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
        session, self._session = self._session, None
        if session is not None and self._loop is asyncio.get_running_loop():
            await session.close()

    def _http(self) -> aiohttp.ClientSession:
        # A session belongs to the event loop it was made on; a client outliving its
        # loop (tests run one loop each) makes a new one on the next.
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            self._loop = loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=_KEEPALIVE_S),
                # The pool's breakers and failover decide what a refused request means.
                raise_for_status=False,
                auto_decompress=False,
            )
        return self._session

    def _error(self, exc: BaseException) -> InferenceError:
        ep = self.endpoint
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return EndpointDown(f"connect timed out: {exc}", endpoint=ep)
        if isinstance(exc, TimeoutError):  # aiohttp's read and total timeouts included
            return InferenceTimeout(f"timed out: {type(exc).__name__} {exc}", endpoint=ep)
        if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
            return EndpointDown(f"{type(exc).__name__}: {exc}", endpoint=ep)
        return BadResponse(f"{type(exc).__name__}: {exc}", endpoint=ep)

    @staticmethod
    def _as_httpx(response: aiohttp.ClientResponse, body: bytes) -> httpx.Response:
        return httpx.Response(response.status, headers=response.raw_headers, content=body)

    async def health(self) -> bool:
        try:
            async with self._http().get(
                f"{self._base}/health", timeout=_timeout(self.timeouts, streaming=False)
            ) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def models(self) -> list[str]:
        return self._wire.parse_models((await self._request("GET", "/v1/models")).json())

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
        response = await self._request("POST", "/tokenize", payload=payload)
        return self._wire.parse_tokenize(response.json())

    async def _request(
        self, method: str, path: str, *, payload: Any = None, timeouts: Timeouts | None = None
    ) -> httpx.Response:
        timeouts = timeouts or self.timeouts
        started = self._clock()
        try:
            async with self._http().request(
                method,
                f"{self._base}{path}",
                data=None if payload is None else json.dumps(payload).encode(),
                headers=None if payload is None else _JSON_HEADERS,
                timeout=_timeout(timeouts, streaming=False),
            ) as response:
                chunks = []
                async for chunk in response.content.iter_any():
                    # The total deadline holds against a server trickling bytes too.
                    if self._clock() - started > timeouts.total:
                        raise InferenceTimeout(
                            f"no complete response within {timeouts.total:g}s",
                            endpoint=self.endpoint,
                        )
                    chunks.append(chunk)
                result = self._as_httpx(response, b"".join(chunks))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._error(exc) from exc
        if result.status_code != 200:
            raise self._wire.status_error(result)
        return result

    async def chat(
        self, request: ChatRequest, *, stream: bool = True, budget_s: float | None = None
    ) -> ChatResult:
        """One completion. `budget_s` caps every deadline to what a caller has left."""
        if not stream:
            timeouts = effective_timeouts(self.timeouts, budget_s)
            started = self._clock()
            response = await self._request(
                "POST", CHAT_PATH, payload=chat_payload(request, stream=False), timeouts=timeouts
            )
            return self._wire.parse_completion(response, (self._clock() - started) * 1000.0)
        async for item in self.stream_chat(request, budget_s=budget_s):
            if isinstance(item, ChatResult):
                return item
        raise BadResponse("stream produced no result", endpoint=self.endpoint)  # unreachable

    async def stream_chat(
        self, request: ChatRequest, *, budget_s: float | None = None
    ) -> AsyncIterator[TokenDelta | ChatResult]:
        """Text as it is generated, then one `ChatResult`; a failure after the first
        `TokenDelta` is a `PartialFailure` (see `VLLMClient.stream_chat`)."""
        timeouts = effective_timeouts(self.timeouts, budget_s)
        state = StreamState(started=self._clock())
        wire = self._wire
        try:
            async with self._http().post(
                f"{self._base}{CHAT_PATH}",
                data=json.dumps(chat_payload(request, stream=True)).encode(),
                headers={**_JSON_HEADERS, **STREAM_HEADERS},
                timeout=_timeout(timeouts, streaming=True),
            ) as response:
                if response.status != 200:
                    raise wire.status_error(self._as_httpx(response, await response.read()))
                events = EventSource(
                    httpx.Response(
                        200,
                        headers=response.raw_headers,
                        stream=_Chunks(
                            response,
                            lambda: wire.check_stream_deadlines(state, timeouts, self._clock()),
                        ),
                    )
                )
                async for event in events.aiter_sse():
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
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise wire.after_tokens(self._error(exc), state) from exc
        yield wire.finish_stream(state, self._clock())
