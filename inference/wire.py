"""vLLM's OpenAI-compatible wire format, shared by the sync and async clients: request
payloads, stream-chunk parsing, and the mapping of error bodies to typed exceptions."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

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
# vLLM names the offending field in `param` when a request does not fit the context;
# `input_text` is its cheap pre-tokenisation check on characters.
_CONTEXT_PARAMS = frozenset({"input_tokens", "input_text", "max_tokens", "max_completion_tokens"})
STREAM_HEADERS = {"Accept": "text/event-stream", "Cache-Control": "no-store"}


def chat_payload(request: ChatRequest, *, stream: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": request.model,
        "messages": list(request.messages),
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "stream": stream,
    }
    if request.stop:
        payload["stop"] = list(request.stop)
    if request.seed is not None:
        payload["seed"] = request.seed
    if stream:
        # Without this vLLM never reports token counts on a stream.
        payload["stream_options"] = {"include_usage": True}
    return payload


def effective_timeouts(timeouts: Timeouts, budget_s: float | None) -> Timeouts:
    """Shrink the client's deadlines to what is left of a caller's overall budget."""
    if budget_s is None:
        return timeouts
    total = max(0.001, min(timeouts.total, budget_s))
    return Timeouts(
        connect=min(timeouts.connect, total),
        first_token=min(timeouts.first_token, total),
        total=total,
    )


def httpx_timeout(timeouts: Timeouts, *, streaming: bool) -> httpx.Timeout:
    # On a stream, a silence longer than the first-token deadline is as bad as a slow start.
    read = min(timeouts.first_token, timeouts.total) if streaming else timeouts.total
    return httpx.Timeout(
        connect=timeouts.connect, read=read, write=timeouts.total, pool=timeouts.connect
    )


@dataclass
class StreamState:
    started: float
    pieces: list[str] = field(default_factory=list)
    first_token_at: float | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    done: bool = False

    @property
    def text(self) -> str:
        return "".join(self.pieces)


class Wire:
    """Protocol logic bound to one endpoint; the clients add only the I/O."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def check_stream_deadlines(self, state: StreamState, timeouts: Timeouts, now: float) -> None:
        elapsed = now - state.started
        if state.first_token_at is None and elapsed > timeouts.first_token:
            raise InferenceTimeout(
                f"no first token within {timeouts.first_token:g}s", endpoint=self.endpoint
            )
        if elapsed > timeouts.total:
            raise InferenceTimeout(
                f"stream not finished within {timeouts.total:g}s", endpoint=self.endpoint
            )

    def consume(self, data: str, state: StreamState, now: float) -> list[str]:
        """Apply one SSE `data:` payload to `state`; return the new text pieces."""
        if data == "[DONE]":
            state.done = True
            return []
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise BadResponse(
                f"stream chunk is not JSON: {data[:200]!r}", endpoint=self.endpoint
            ) from exc
        if not isinstance(chunk, dict):
            raise BadResponse("stream chunk is not an object", endpoint=self.endpoint)
        if "error" in chunk:
            # vLLM reports failures that happen mid-generation as an in-band error event.
            raise self.error_from_body(chunk, _chunk_status(chunk))
        if isinstance(chunk.get("usage"), dict):
            state.usage = chunk["usage"]
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise BadResponse("stream chunk 'choices' is not a list", endpoint=self.endpoint)
        new: list[str] = []
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str) and content:
                if state.first_token_at is None:
                    state.first_token_at = now
                state.pieces.append(content)
                new.append(content)
            if choice.get("finish_reason"):
                state.finish_reason = str(choice["finish_reason"])
        return new

    def finish_stream(self, state: StreamState, now: float) -> ChatResult:
        if not state.done or state.finish_reason is None:
            missing = "[DONE]" if not state.done else "a finish_reason"
            error = BadResponse(f"stream ended without {missing}", endpoint=self.endpoint)
            raise self.after_tokens(error, state)
        first = state.first_token_at if state.first_token_at is not None else now
        return self.result(
            state.text,
            state.finish_reason,
            state.usage or {},
            ttft_ms=(first - state.started) * 1000.0,
            latency_ms=(now - state.started) * 1000.0,
        )

    def parse_completion(self, response: httpx.Response, latency_ms: float) -> ChatResult:
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
        # A non-streamed answer arrives all at once: its first token *is* the whole reply.
        return self.result(text, finish_reason, usage, ttft_ms=latency_ms, latency_ms=latency_ms)

    def parse_models(self, body: Any) -> list[str]:
        try:
            return [str(entry["id"]) for entry in body["data"]]
        except (KeyError, TypeError) as exc:
            raise BadResponse(
                f"unexpected /v1/models body: {exc!r}", endpoint=self.endpoint
            ) from exc

    def parse_tokenize(self, body: Any) -> list[int]:
        try:
            return [int(t) for t in body["tokens"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise BadResponse(
                f"unexpected /tokenize body: {exc!r}", endpoint=self.endpoint
            ) from exc

    def after_tokens(self, error: InferenceError, state: StreamState) -> InferenceError:
        """Once text has reached the caller, a failure must not be retried transparently."""
        if not state.pieces or isinstance(error, PartialFailure):
            return error
        return PartialFailure(
            f"stream failed after {len(state.pieces)} chunk(s): {error.message}",
            partial_text=state.text,
            endpoint=self.endpoint,
            status_code=error.status_code,
        )

    def result(
        self,
        text: str,
        finish_reason: str,
        usage: dict[str, Any],
        *,
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

    def transport_error(self, exc: httpx.HTTPError) -> InferenceError:
        ep = self.endpoint
        if isinstance(exc, httpx.ConnectTimeout):
            return EndpointDown(f"connect timed out: {exc}", endpoint=ep)
        if isinstance(exc, httpx.TimeoutException):
            return InferenceTimeout(f"timed out: {type(exc).__name__} {exc}", endpoint=ep)
        if isinstance(exc, httpx.TransportError):
            return EndpointDown(f"{type(exc).__name__}: {exc}", endpoint=ep)
        return BadResponse(f"{type(exc).__name__}: {exc}", endpoint=ep)

    def status_error(self, response: httpx.Response) -> InferenceError:
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text[:500]}
        return self.error_from_body(body, response.status_code)

    def error_from_body(self, body: Any, status: int) -> InferenceError:
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


def tokenize_payload(
    model: str, messages: list[dict[str, str]] | None, prompt: str | None
) -> dict[str, Any]:
    if (messages is None) == (prompt is None):
        raise ValueError("tokenize() takes exactly one of messages or prompt")
    if messages is not None:
        return {"model": model, "messages": messages}
    return {"model": model, "prompt": prompt}


def _chunk_status(chunk: dict[str, Any]) -> int:
    """HTTP-like status of an in-band stream error; unknown means a server-side failure."""
    error = chunk.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, int) and 400 <= code < 600 else 500


def _as_int(value: Any) -> int:
    return value if isinstance(value, int) else 0
