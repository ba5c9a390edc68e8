"""VLLMClient error mapping and deadlines, against scripted fake servers (no network)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from inference import (
    BadResponse,
    ChatRequest,
    ContextTooLong,
    Endpoint,
    InferenceTimeout,
    Overloaded,
    PartialFailure,
    RequestRejected,
    Timeouts,
    VLLMClient,
)

ENDPOINT = Endpoint(name="fake", url="http://fake.invalid:8000", model="m")
REQUEST = ChatRequest(
    model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=8, temperature=0.2
)
SSE_HEADERS = {"content-type": "text/event-stream"}
SseBuilder = Callable[..., bytes]


def _client(
    handler: Callable[[httpx.Request], httpx.Response],
    *,
    timeouts: Timeouts | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> VLLMClient:
    transport = httpx.MockTransport(handler)
    return VLLMClient(ENDPOINT, timeouts=timeouts or Timeouts(), transport=transport, clock=clock)


def _ticking_clock(step: float = 1.0) -> Callable[[], float]:
    """A clock that advances `step` seconds every time it is read: deadlines without waiting."""
    ticks = itertools.count(0.0, step)
    return lambda: next(ticks)


class _ScriptedStream(httpx.SyncByteStream):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks


def test_stream_request_asks_for_usage_and_sends_the_messages(sse_body: SseBuilder) -> None:
    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, headers=SSE_HEADERS, content=sse_body(["ok"]))

    with _client(handler) as client:
        client.chat(REQUEST)
    assert seen == [
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 8,
            "temperature": 0.2,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ]


def test_usage_from_the_stream_is_reported(sse_body: SseBuilder) -> None:
    usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    body = sse_body(["Hel", "lo"], usage=usage)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=SSE_HEADERS, content=body)

    with _client(handler) as client:
        result = client.chat(REQUEST)
    assert (result.text, result.prompt_tokens, result.completion_tokens) == ("Hello", 7, 2)


def test_stream_without_usage_reports_zero_tokens_rather_than_guessing(
    sse_body: SseBuilder,
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=SSE_HEADERS, content=sse_body(["a", "b"]))

    with _client(handler) as client:
        result = client.chat(REQUEST)
    assert (result.text, result.prompt_tokens, result.completion_tokens) == ("ab", 0, 0)


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("stream", [True, False])
def test_shedding_load_is_a_retryable_overload(status: int, stream: bool) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": {"message": "busy", "code": status}})

    with _client(handler) as client, pytest.raises(Overloaded) as caught:
        client.chat(REQUEST, stream=stream)
    assert caught.value.retryable is True


def test_server_error_is_a_retryable_bad_response() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text="Internal Server Error")

    with _client(handler) as client, pytest.raises(BadResponse) as caught:
        client.chat(REQUEST)
    assert caught.value.retryable is True


def test_unparseable_completion_is_a_bad_response() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>proxy error</html>")

    with _client(handler) as client, pytest.raises(BadResponse):
        client.chat(REQUEST, stream=False)


def test_stream_with_the_wrong_content_type_is_a_bad_response() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": []})

    with _client(handler) as client, pytest.raises(BadResponse):
        client.chat(REQUEST)


def test_old_style_flat_context_error_is_recognised() -> None:
    body = {
        "object": "error",
        "message": "This model's maximum context length is 4096 tokens. You requested 5000.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json=body)

    with _client(handler) as client, pytest.raises(ContextTooLong):
        client.chat(REQUEST)


def test_other_client_errors_are_rejected_requests() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            422, json={"error": {"message": "bad temperature", "param": "temperature"}}
        )

    with _client(handler) as client, pytest.raises(RequestRejected) as caught:
        client.chat(REQUEST)
    assert caught.value.status_code == 422


def test_stream_that_ends_before_any_token_is_a_retryable_bad_response(
    sse_body: SseBuilder,
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers=SSE_HEADERS, content=sse_body([], finish_reason=None, done=False)
        )

    with _client(handler) as client, pytest.raises(BadResponse):
        client.chat(REQUEST)


def test_connection_reset_after_tokens_is_a_partial_failure(sse_body: SseBuilder) -> None:
    def chunks() -> Iterator[bytes]:
        yield sse_body(["Hello", " wor"], finish_reason=None, done=False)
        raise httpx.ReadError("connection reset by peer")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=SSE_HEADERS, stream=_ScriptedStream(chunks()))

    with _client(handler) as client, pytest.raises(PartialFailure) as caught:
        client.chat(REQUEST)
    assert caught.value.partial_text == "Hello wor"
    assert caught.value.retryable is False


def test_in_band_error_event_after_tokens_is_a_partial_failure(sse_body: SseBuilder) -> None:
    error = {"error": {"message": "engine died", "type": "InternalServerError", "code": 500}}
    body = (
        sse_body(["par", "tial"], finish_reason=None, done=False)
        + f"data: {json.dumps(error)}\n\n".encode()
    )

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=SSE_HEADERS, content=body)

    with _client(handler) as client, pytest.raises(PartialFailure) as caught:
        client.chat(REQUEST)
    assert caught.value.partial_text == "partial"
    assert "engine died" in str(caught.value)


def test_first_token_deadline_holds_even_while_bytes_keep_trickling() -> None:
    sent: list[bytes] = []

    def trickle() -> Iterator[bytes]:
        # One byte per read, never completing an event: a per-read timeout would never fire.
        for _ in range(1000):
            sent.append(b":")
            yield b":"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=SSE_HEADERS, stream=_ScriptedStream(trickle()))

    timeouts = Timeouts(connect=1.0, first_token=5.0, total=100.0)
    client = _client(handler, timeouts=timeouts, clock=_ticking_clock())
    with client, pytest.raises(InferenceTimeout) as caught:
        client.chat(REQUEST)
    assert "first token" in str(caught.value)
    assert caught.value.retryable is True
    assert len(sent) < 10  # gave up at the deadline, long before the server stopped


def test_total_deadline_after_tokens_is_a_partial_failure(sse_body: SseBuilder) -> None:
    def chunks() -> Iterator[bytes]:
        yield sse_body(["slow"], finish_reason=None, done=False)
        for _ in range(1000):
            yield b": keep-alive\n\n"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=SSE_HEADERS, stream=_ScriptedStream(chunks()))

    timeouts = Timeouts(connect=1.0, first_token=5.0, total=50.0)
    client = _client(handler, timeouts=timeouts, clock=_ticking_clock())
    with client, pytest.raises(PartialFailure) as caught:
        client.chat(REQUEST)
    assert caught.value.partial_text == "slow"
    assert isinstance(caught.value.__cause__, InferenceTimeout)


def test_malformed_chunk_before_tokens_is_a_bad_response() -> None:
    body = b'data: {"choices": [{"index": 0, "delta": "oops"}]}\n\ndata: {"choices": 7}\n\n'

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=SSE_HEADERS, content=body)

    with _client(handler) as client, pytest.raises(BadResponse):
        client.chat(REQUEST)


def test_the_package_never_imports_django() -> None:
    code = (
        "import sys, inference, inference.simulator, inference.simulator.__main__\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == "[]"
