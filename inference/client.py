"""Synchronous client for one vLLM (OpenAI-compatible) endpoint.

All failures surface as `inference.types.InferenceError` subclasses so that callers (and
`inference.pool.Pool`) can decide on failover without knowing about httpx.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import httpx
from httpx_sse import EventSource, ServerSentEvent, SSEError

from inference.types import (
    BadResponse,
    ChatRequest,
    ChatResult,
    ContextTooLong,
    Endpoint,
    EndpointDown,
    InferenceError,
    InferenceTimeout,
    Overloaded,
    PartialFailure,
    RequestRejected,
    Timeouts,
)

CHAT_PATH = "/v1/chat/completions"
# vLLM names the offending field in `param` when a request does not fit the context.
_CONTEXT_PARAMS = frozenset({"input_tokens", "max_tokens", "max_completion_tokens"})


@dataclass
class _StreamState:
    started: float
    pieces: list[str] = field(default_factory=list)
    first_token_at: float | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    done: bool = False

    @property
    def text(self) -> str:
        return "".join(self.pieces)


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
        timeouts: Timeouts = Timeouts(),  # noqa: B008 - frozen, sharing it is safe
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        # `clock` is injectable so deadline behaviour can be tested without real waiting.
        self.endpoint = endpoint
        self.timeouts = timeouts
        self._clock = clock
        self._http = httpx.Client(
            base_url=endpoint.url,
            transport=transport,
            timeout=httpx.Timeout(
                connect=timeouts.connect,
                read=timeouts.total,
                write=timeouts.total,
                pool=timeouts.connect,
            ),
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

    # -- simple GET endpoints -------------------------------------------------------------

    def health(self) -> bool:
        """True only for a 200 from `/health`; never raises, since "down" is the answer."""
        try:
            return self._http.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    def models(self) -> list[str]:
        body = self._get_json("/v1/models")
        try:
            return [str(entry["id"]) for entry in body["data"]]
        except (KeyError, TypeError) as exc:
            raise BadResponse(
                f"unexpected /v1/models body: {exc!r}", endpoint=self.endpoint
            ) from exc

    def metrics_text(self) -> str:
        return self._get("/metrics").text

    def _get(self, path: str) -> httpx.Response:
        try:
            response = self._http.get(path)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        if response.status_code != 200:
            raise self._status_error(response)
        return response

    def _get_json(self, path: str) -> Any:
        response = self._get(path)
        try:
            return response.json()
        except ValueError as exc:
            raise BadResponse(f"{path} returned invalid JSON", endpoint=self.endpoint) from exc

    # -- chat -----------------------------------------------------------------------------

    def chat(self, request: ChatRequest, *, stream: bool = True) -> ChatResult:
        payload: dict[str, Any] = {
            "model": request.model,
            "messages": list(request.messages),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": stream,
        }
        if stream:
            # Without this vLLM never reports token counts on a stream.
            payload["stream_options"] = {"include_usage": True}
            return self._chat_stream(payload)
        return self._chat_once(payload)

    def _chat_once(self, payload: dict[str, Any]) -> ChatResult:
        started = self._clock()

        def check() -> None:
            if self._clock() - started > self.timeouts.total:
                raise InferenceTimeout(
                    f"no complete response within {self.timeouts.total}s",
                    endpoint=self.endpoint,
                )

        try:
            with self._http.stream("POST", CHAT_PATH, json=payload) as response:
                _guard(response, check)
                response.read()
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        if response.status_code != 200:
            raise self._status_error(response)
        latency_ms = (self._clock() - started) * 1000.0
        try:
            body = response.json()
            choice = body["choices"][0]
            text = choice["message"].get("content") or ""
            finish_reason = str(choice["finish_reason"])
            usage = body.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise BadResponse(
                f"unparseable chat completion: {exc!r}", endpoint=self.endpoint
            ) from exc
        # A non-streamed answer arrives all at once, so its first token *is* the whole reply.
        return self._result(text, finish_reason, usage, latency_ms, latency_ms)

    def _chat_stream(self, payload: dict[str, Any]) -> ChatResult:
        state = _StreamState(started=self._clock())
        read_timeout = min(self.timeouts.first_token, self.timeouts.total)
        timeout = httpx.Timeout(
            connect=self.timeouts.connect,
            read=read_timeout,
            write=self.timeouts.total,
            pool=self.timeouts.connect,
        )
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        try:
            with self._http.stream(
                "POST", CHAT_PATH, json=payload, headers=headers, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    response.read()
                    raise self._status_error(response)
                _guard(response, lambda: self._check_stream_deadlines(state))
                for event in EventSource(response).iter_sse():
                    self._consume(event, state)
                    if state.done:
                        break
        except InferenceError as exc:
            converted = self._after_tokens(exc, state)
            if converted is exc:
                raise
            raise converted from exc
        except SSEError as exc:
            error = BadResponse(f"not an event stream: {exc}", endpoint=self.endpoint)
            raise self._after_tokens(error, state) from exc
        except httpx.HTTPError as exc:
            raise self._after_tokens(self._transport_error(exc), state) from exc

        if not state.done or state.finish_reason is None:
            missing = "[DONE]" if not state.done else "a finish_reason"
            error = BadResponse(f"stream ended without {missing}", endpoint=self.endpoint)
            raise self._after_tokens(error, state)
        now = self._clock()
        latency_ms = (now - state.started) * 1000.0
        first = state.first_token_at if state.first_token_at is not None else now
        ttft_ms = (first - state.started) * 1000.0
        return self._result(state.text, state.finish_reason, state.usage or {}, ttft_ms, latency_ms)

    def _check_stream_deadlines(self, state: _StreamState) -> None:
        elapsed = self._clock() - state.started
        if state.first_token_at is None and elapsed > self.timeouts.first_token:
            raise InferenceTimeout(
                f"no first token within {self.timeouts.first_token}s", endpoint=self.endpoint
            )
        if elapsed > self.timeouts.total:
            raise InferenceTimeout(
                f"stream not finished within {self.timeouts.total}s", endpoint=self.endpoint
            )

    def _consume(self, event: ServerSentEvent, state: _StreamState) -> None:
        if event.data == "[DONE]":
            state.done = True
            return
        try:
            chunk = json.loads(event.data)
        except ValueError as exc:
            raise BadResponse(
                f"stream chunk is not JSON: {event.data[:200]!r}", endpoint=self.endpoint
            ) from exc
        if not isinstance(chunk, dict):
            raise BadResponse("stream chunk is not an object", endpoint=self.endpoint)
        if "error" in chunk:
            # vLLM reports failures that happen mid-generation as an in-band error event.
            raise self._error_from_body(chunk, _chunk_status(chunk))
        if isinstance(chunk.get("usage"), dict):
            state.usage = chunk["usage"]
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise BadResponse("stream chunk 'choices' is not a list", endpoint=self.endpoint)
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str) and content:
                if state.first_token_at is None:
                    state.first_token_at = self._clock()
                state.pieces.append(content)
            if choice.get("finish_reason"):
                state.finish_reason = str(choice["finish_reason"])

    def _after_tokens(self, error: InferenceError, state: _StreamState) -> InferenceError:
        """Once text has reached us, any failure must not be retried transparently."""
        if not state.pieces or isinstance(error, PartialFailure):
            return error
        return PartialFailure(
            f"stream failed after {len(state.pieces)} chunk(s): {error.message}",
            partial_text=state.text,
            endpoint=self.endpoint,
            status_code=error.status_code,
        )

    def _result(
        self,
        text: str,
        finish_reason: str,
        usage: dict[str, Any],
        ttft_ms: float,
        latency_ms: float,
    ) -> ChatResult:
        # We always ask for usage; if a server still omits it we report 0 rather than
        # inventing counts with a tokenizer that may not match the model's.
        return ChatResult(
            text=text,
            finish_reason=finish_reason,
            prompt_tokens=_as_int(usage.get("prompt_tokens")),
            completion_tokens=_as_int(usage.get("completion_tokens")),
            ttft_ms=ttft_ms,
            latency_ms=latency_ms,
            endpoint=self.endpoint,
        )

    # -- error mapping --------------------------------------------------------------------

    def _transport_error(self, exc: httpx.HTTPError) -> InferenceError:
        ep = self.endpoint
        if isinstance(exc, httpx.ConnectTimeout):
            return EndpointDown(f"connect timed out: {exc}", endpoint=ep)
        if isinstance(exc, httpx.TimeoutException):
            return InferenceTimeout(f"timed out: {type(exc).__name__} {exc}", endpoint=ep)
        if isinstance(exc, httpx.TransportError):
            return EndpointDown(f"{type(exc).__name__}: {exc}", endpoint=ep)
        return BadResponse(f"{type(exc).__name__}: {exc}", endpoint=ep)

    def _status_error(self, response: httpx.Response) -> InferenceError:
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text[:500]}
        return self._error_from_body(body, response.status_code)

    def _error_from_body(self, body: Any, status: int) -> InferenceError:
        # Newer vLLM nests the error under "error"; older releases used a flat object.
        error = body.get("error", body) if isinstance(body, dict) else {}
        if not isinstance(error, dict):
            error = {"message": str(error)}
        message = str(error.get("message") or f"HTTP {status}")
        param = error.get("param")
        ep = self.endpoint
        if status in (429, 503):
            return Overloaded(message, endpoint=ep, status_code=status)
        if status >= 500:
            return BadResponse(message, endpoint=ep, status_code=status)
        if status == 400 and (
            param in _CONTEXT_PARAMS or "maximum context length" in message.lower()
        ):
            return ContextTooLong(message, endpoint=ep, status_code=status)
        if 400 <= status < 500:
            return RequestRejected(message, endpoint=ep, status_code=status)
        return BadResponse(f"unexpected HTTP {status}: {message}", endpoint=ep, status_code=status)


def _chunk_status(chunk: dict[str, Any]) -> int:
    """HTTP-like status of an in-band stream error; unknown means a server-side failure."""
    error = chunk.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, int) and 400 <= code < 600 else 500


def _as_int(value: Any) -> int:
    return value if isinstance(value, int) else 0
