"""AsyncVLLMClient: the same protocol as VLLMClient, for asyncio callers. Each test runs
its own event loop with asyncio.run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from inference import (
    AsyncVLLMClient,
    BadResponse,
    ChatRequest,
    ChatResult,
    ContextTooLong,
    Endpoint,
    EndpointDown,
    InferenceTimeout,
    Overloaded,
    PartialFailure,
    RequestRejected,
    Timeouts,
    TokenDelta,
    VLLMClient,
)
from tests.inference.support import SSE_HEADERS, CannedServer, HangingServer

SseBuilder = Callable[..., bytes]


def _request(
    endpoint: Endpoint, text: str = "Hello, async!", model: str | None = None
) -> ChatRequest:
    return ChatRequest(
        model=model or endpoint.model,
        messages=({"role": "user", "content": text},),
        max_tokens=64,
        temperature=0.0,
    )


@pytest.mark.parametrize("stream", [True, False])
def test_async_and_sync_clients_agree_on_text_and_usage(simulator: Endpoint, stream: bool) -> None:
    request = _request(simulator)
    with VLLMClient(simulator) as client:
        sync = client.chat(request, stream=stream)

    async def main() -> ChatResult:
        async with AsyncVLLMClient(simulator) as client:
            return await client.chat(request, stream=stream)

    result = asyncio.run(main())
    assert result.text == sync.text
    assert "You said: Hello, async!" in result.text
    assert result.finish_reason == sync.finish_reason
    assert (result.prompt_tokens, result.completion_tokens) == (
        sync.prompt_tokens,
        sync.completion_tokens,
    )
    assert result.completion_tokens > 0
    assert result.endpoint == simulator
    assert 0 < result.ttft_ms <= result.latency_ms


def test_async_stream_yields_deltas_that_join_up_to_the_result(simulator: Endpoint) -> None:
    async def main() -> list[TokenDelta | ChatResult]:
        async with AsyncVLLMClient(simulator) as client:
            return [item async for item in client.stream_chat(_request(simulator))]

    items = asyncio.run(main())
    *deltas, result = items
    assert isinstance(result, ChatResult)
    assert deltas and all(isinstance(d, TokenDelta) for d in deltas)
    assert "".join(d.text for d in deltas if isinstance(d, TokenDelta)) == result.text


def test_async_simple_endpoints_work_against_the_simulator(simulator: Endpoint) -> None:
    async def main() -> tuple[bool, list[str], str]:
        async with AsyncVLLMClient(simulator) as client:
            return await client.health(), await client.models(), await client.metrics_text()

    healthy, models, metrics = asyncio.run(main())
    assert healthy
    assert models == [simulator.model]
    assert "vllm:num_requests_running" in metrics


@pytest.mark.parametrize("stream", [True, False])
def test_async_closed_port_is_endpoint_down(closed_endpoint: Endpoint, stream: bool) -> None:
    async def main() -> None:
        async with AsyncVLLMClient(closed_endpoint) as client:
            assert not await client.health()
            await client.chat(_request(closed_endpoint), stream=stream)

    with pytest.raises(EndpointDown) as caught:
        asyncio.run(main())
    assert caught.value.endpoint == closed_endpoint


@pytest.mark.parametrize("stream", [True, False])
def test_async_unknown_model_is_rejected_not_retryable(simulator: Endpoint, stream: bool) -> None:
    async def main() -> None:
        async with AsyncVLLMClient(simulator) as client:
            await client.chat(_request(simulator, model="no/such-model"), stream=stream)

    with pytest.raises(RequestRejected) as caught:
        asyncio.run(main())
    assert caught.value.status_code == 404
    assert not caught.value.retryable


def test_async_prompt_longer_than_the_context_is_context_too_long(simulator: Endpoint) -> None:
    async def main() -> None:
        async with AsyncVLLMClient(simulator) as client:
            await client.chat(_request(simulator, "word " * 2000))

    with pytest.raises(ContextTooLong):
        asyncio.run(main())


def test_async_stream_broken_after_tokens_is_a_partial_failure(sse_body: SseBuilder) -> None:
    body = sse_body(["Half ", "a ", "rep"], finish_reason=None, done=False)
    server = CannedServer(200, SSE_HEADERS, body)
    endpoint = server.endpoint()
    seen: list[str] = []

    async def main() -> None:
        async with AsyncVLLMClient(endpoint) as client:
            async for item in client.stream_chat(_request(endpoint)):
                if isinstance(item, TokenDelta):
                    seen.append(item.text)

    try:
        with pytest.raises(PartialFailure) as caught:
            asyncio.run(main())
    finally:
        server.close()
    assert "".join(seen) == caught.value.partial_text == "Half a rep"
    assert json.loads(server.requests[0])["stream"] is True


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(
    ("status", "error", "retryable"),
    [(503, Overloaded, True), (500, BadResponse, True), (400, RequestRejected, False)],
)
def test_async_error_statuses_map_as_the_sync_client_maps_them(
    stream: bool, status: int, error: type[Exception], retryable: bool
) -> None:
    body = json.dumps({"error": {"message": "nope", "code": status}}).encode()
    server = CannedServer(status, {"content-type": "application/json"}, body)
    endpoint = server.endpoint()

    async def main() -> None:
        async with AsyncVLLMClient(endpoint) as client:
            await client.chat(_request(endpoint), stream=stream)

    try:
        with pytest.raises(error) as caught:
            asyncio.run(main())
    finally:
        server.close()
    assert caught.value.message == "nope"  # type: ignore[attr-defined]
    assert caught.value.retryable is retryable  # type: ignore[attr-defined]


def test_async_non_json_answer_is_a_bad_response() -> None:
    server = CannedServer(200, {"content-type": "application/json"}, b"<html>proxy</html>")
    endpoint = server.endpoint()

    async def main() -> None:
        async with AsyncVLLMClient(endpoint) as client:
            await client.chat(_request(endpoint), stream=False)

    try:
        with pytest.raises(BadResponse):
            asyncio.run(main())
    finally:
        server.close()


def test_async_first_token_deadline_fires_on_a_server_that_never_answers() -> None:
    server = HangingServer()
    endpoint = server.endpoint()

    async def main() -> None:
        timeouts = Timeouts(connect=1.0, first_token=0.3, total=5.0)
        async with AsyncVLLMClient(endpoint, timeouts=timeouts) as client:
            await client.chat(_request(endpoint))

    try:
        with pytest.raises(InferenceTimeout) as caught:
            asyncio.run(main())
    finally:
        server.close()
    assert caught.value.retryable
