"""Protocol conformance: the same checks against the simulator and a real vLLM.

`server_url` (tests/vllm/conftest.py) is parametrized over ["simulator", "vllm"], so a
check that holds for one peer and not the other fails. Both serve Qwen/Qwen-7B-Chat with
max_model_len 1024; the real one is a tiny random-weight model, so every assertion is on
protocol and accounting, never on generated text.

Differences between the peers that are accepted here, each pinned where it is checked:

* Token counts differ (different tokenizers); each peer must agree with *itself*
  (`/tokenize` vs `usage`, `usage` vs `/metrics`).
* A prompt over vLLM's character bound (13 characters per context token, checked before
  tokenizing) is `param` `input_text` from vLLM and `input_tokens` from the simulator.
* A prompt of exactly max_model_len tokens is `param` `max_tokens` from vLLM
  ("max_tokens must be at least 1, got 0") and `input_tokens` from the simulator.
* `max_completion_tokens` over max_model_len is `param` `max_completion_tokens` from vLLM
  and `max_tokens` from the simulator.
* vLLM's stream carries `finish_reason` on the last token's chunk and may send empty
  `content` deltas (bytes of an incomplete UTF-8 character held back); the simulator
  sends every token as non-empty content and `finish_reason` on a separate empty chunk.
* vLLM's metrics carry an extra `engine` label.

Both reject a prompt by its length in characters (13 per token) before tokenising it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inference import (
    AsyncVLLMClient,
    ChatRequest,
    ChatResult,
    ContextTooLong,
    Endpoint,
    Pool,
    RequestRejected,
    Timeouts,
    TokenDelta,
    VLLMClient,
)

pytestmark = pytest.mark.vllm

MODEL = "Qwen/Qwen-7B-Chat"
MAX_MODEL_LEN = 1024
# vLLM rejects a rendered prompt longer than this many characters before tokenizing.
VLLM_CHARS_PER_TOKEN_BOUND = 13
HTTP_TIMEOUT = 120.0
METRICS_DEADLINE_S = 15.0

HELLO = [{"role": "user", "content": "hello world, what is my order status?"}]
# ~1 token per word on both peers: over 1024 tokens, under vLLM's 13,312-character bound.
OVER_BY_TOKENS = [{"role": "user", "content": "hello " * 1200}]
# Words, so the simulator counts them too: over the character bound on vLLM.
OVER_BY_CHARS = [{"role": "user", "content": "hello " * 3000}]
# One 20,000-character "word".
OVER_BY_CHARS_NO_SPACES = [{"role": "user", "content": "x" * 20000}]

# The `param` each peer names when a prompt does not fit (see the module docstring).
PROMPT_TOO_LONG_PARAMS = {
    "vllm": {"input_tokens", "input_text"},
    "simulator": {"input_tokens", "input_text"},
}


def chat_body(messages: list[dict[str, str]], **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": messages,
        "max_tokens": 8,
        "temperature": 0,
    }
    body.update(overrides)
    return body


def post_chat(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=HTTP_TIMEOUT)


def sse_events(response: httpx.Response) -> list[str]:
    """The `data:` payloads of an SSE body, checking the framing on the way."""
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [block for block in response.text.split("\n\n") if block.strip()]
    payloads = []
    for block in events:
        lines = block.split("\n")
        assert len(lines) == 1 and lines[0].startswith("data: "), block
        payloads.append(lines[0][len("data: ") :])
    return payloads


def tokenize_count(url: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    response = httpx.post(
        f"{url}/tokenize", json={"model": MODEL, "messages": messages}, timeout=HTTP_TIMEOUT
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def messages_with_prompt_tokens(url: str, target: int) -> list[dict[str, str]]:
    """A user message whose rendered prompt is exactly `target` tokens on this server."""
    words = max(1, target - tokenize_count(url, [{"role": "user", "content": ""}])["count"])
    for _ in range(50):
        messages = [{"role": "user", "content": "hello " * words}]
        count = int(tokenize_count(url, messages)["count"])
        if count == target:
            return messages
        words += target - count
    raise AssertionError(f"could not build a prompt of exactly {target} tokens")


def assert_error(
    response: httpx.Response, status: int, err_type: str, params: set[str]
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    assert error["type"] == err_type, error
    assert error["param"] in params, error
    assert error["code"] == status, error
    assert isinstance(error["message"], str) and error["message"], error
    return dict(error)


def metric_samples(url: str) -> dict[str, list[Any]]:
    text = httpx.get(f"{url}/metrics", timeout=HTTP_TIMEOUT).text
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def metric_value(families: dict[str, list[Any]], family: str, sample: str, **labels: str) -> float:
    matching = [
        s.value
        for s in families[family]
        if s.name == sample
        and s.labels.get("model_name") == MODEL
        and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert matching, f"no {sample} sample with model_name={MODEL} {labels}"
    return float(sum(matching))


def wait_for(condition: Callable[[], bool], deadline_s: float, what: str) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true within {deadline_s}s")
        time.sleep(0.1)


# -- plain endpoints ----------------------------------------------------------------------


def test_health_is_200(server_url: str) -> None:
    assert httpx.get(f"{server_url}/health", timeout=HTTP_TIMEOUT).status_code == 200


def test_models_lists_served_name_with_max_model_len(server_url: str) -> None:
    body = httpx.get(f"{server_url}/v1/models", timeout=HTTP_TIMEOUT).json()
    assert body["object"] == "list"
    cards = {card["id"]: card for card in body["data"]}
    assert list(cards) == [MODEL]
    assert cards[MODEL]["max_model_len"] == MAX_MODEL_LEN
    assert cards[MODEL]["object"] == "model"


def test_version_is_a_string(server_url: str) -> None:
    version = httpx.get(f"{server_url}/version", timeout=HTTP_TIMEOUT).json()["version"]
    assert isinstance(version, str) and version


# -- chat ---------------------------------------------------------------------------------


def test_non_streaming_chat_reports_usage_and_finish_reason(server_url: str) -> None:
    response = post_chat(server_url, chat_body(HELLO, max_tokens=8))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == MODEL
    (choice,) = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in {"stop", "length"}
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0
    assert 0 < usage["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    if choice["finish_reason"] == "length":
        assert usage["completion_tokens"] == 8


def test_streaming_chat_framing_and_usage(server_url: str) -> None:
    body = chat_body(HELLO, max_tokens=8, stream=True, stream_options={"include_usage": True})
    response = post_chat(server_url, body)
    assert response.status_code == 200, response.text
    payloads = sse_events(response)

    assert payloads[-1] == "[DONE]"
    assert "[DONE]" not in payloads[:-1]
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert len({c["id"] for c in chunks}) == 1, "one id for the whole stream"
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == MODEL for c in chunks)

    first, *middle, last = chunks
    assert first["choices"][0]["delta"]["role"] == "assistant"
    # The last chunk before [DONE] is the usage chunk and carries no choices.
    assert last["choices"] == []
    usage = last["usage"]
    assert usage["prompt_tokens"] > 0
    assert 0 < usage["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert all(c.get("usage") is None for c in [first, *middle])

    finishing = [c for c in [first, *middle] if c["choices"][0]["finish_reason"]]
    assert len(finishing) == 1, "exactly one chunk carries finish_reason"
    assert finishing[0] is ([first, *middle])[-1], "finish_reason comes last, before usage"
    finish_reason = finishing[0]["choices"][0]["finish_reason"]
    assert finish_reason in {"stop", "length"}
    if finish_reason == "length":
        assert usage["completion_tokens"] == 8

    content_deltas = [c for c in middle if "content" in c["choices"][0]["delta"]]
    assert content_deltas, "content arrives as deltas after the role chunk"
    assert all(isinstance(c["choices"][0]["delta"]["content"], str) for c in content_deltas)
    # One delta per generated token at most (the simulator adds an empty finish chunk).
    assert len(content_deltas) <= usage["completion_tokens"] + 1

    plain = post_chat(server_url, chat_body(HELLO, max_tokens=8)).json()
    assert plain["usage"]["prompt_tokens"] == usage["prompt_tokens"]


def test_prompt_plus_max_tokens_over_context_stops_with_length(server_url: str) -> None:
    """Not an error: generation is cut where the context runs out."""
    messages = messages_with_prompt_tokens(server_url, MAX_MODEL_LEN - 4)
    response = post_chat(server_url, chat_body(messages, max_tokens=MAX_MODEL_LEN))
    assert response.status_code == 200, response.text
    body = response.json()
    usage = body["usage"]
    assert usage["prompt_tokens"] == MAX_MODEL_LEN - 4
    assert usage["total_tokens"] <= MAX_MODEL_LEN
    if body["choices"][0]["finish_reason"] == "length":
        assert usage["total_tokens"] == MAX_MODEL_LEN


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_max_tokens_over_max_model_len_is_400_max_tokens(server_url: str, stream: bool) -> None:
    body = chat_body(HELLO, max_tokens=MAX_MODEL_LEN + 1, stream=stream)
    assert_error(post_chat(server_url, body), 400, "BadRequestError", {"max_tokens"})


def test_max_completion_tokens_over_max_model_len_is_400(server_url: str, server_kind: str) -> None:
    body = chat_body(HELLO, max_tokens=None, max_completion_tokens=MAX_MODEL_LEN + 1)
    body = {k: v for k, v in body.items() if v is not None}
    # vLLM names the field that was sent; the simulator always says max_tokens.
    expected = {
        "vllm": {"max_completion_tokens"},
        "simulator": {"max_tokens", "max_completion_tokens"},
    }
    assert_error(post_chat(server_url, body), 400, "BadRequestError", expected[server_kind])


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_prompt_over_context_by_tokens_is_400_input_tokens(server_url: str, stream: bool) -> None:
    body = chat_body(OVER_BY_TOKENS, stream=stream)
    assert_error(post_chat(server_url, body), 400, "BadRequestError", {"input_tokens"})


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_prompt_over_context_by_characters_is_400(
    server_url: str, server_kind: str, stream: bool
) -> None:
    chars = sum(len(m["content"]) for m in OVER_BY_CHARS)
    assert chars > VLLM_CHARS_PER_TOKEN_BOUND * MAX_MODEL_LEN
    body = chat_body(OVER_BY_CHARS, stream=stream)
    params = PROMPT_TOO_LONG_PARAMS[server_kind]
    error = assert_error(post_chat(server_url, body), 400, "BadRequestError", params)
    assert error["param"] == "input_text", error


def test_prompt_of_one_long_word_is_400(server_url: str) -> None:
    body = chat_body(OVER_BY_CHARS_NO_SPACES)
    params = PROMPT_TOO_LONG_PARAMS["vllm"]
    assert_error(post_chat(server_url, body), 400, "BadRequestError", params)


def test_prompt_filling_the_whole_context_is_400(server_url: str, server_kind: str) -> None:
    """No room for one output token. vLLM blames max_tokens (0), the simulator the input."""
    messages = messages_with_prompt_tokens(server_url, MAX_MODEL_LEN)
    expected = {"vllm": {"max_tokens"}, "simulator": {"input_tokens", "max_tokens"}}
    for body in (chat_body(messages), chat_body(messages, max_tokens=None)):
        body = {k: v for k, v in body.items() if v is not None}
        assert_error(post_chat(server_url, body), 400, "BadRequestError", expected[server_kind])
    # One token less fits, with exactly one token of room.
    fits = messages_with_prompt_tokens(server_url, MAX_MODEL_LEN - 1)
    response = post_chat(server_url, chat_body(fits))
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 1
    assert response.json()["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_unknown_model_is_404_not_found_model(server_url: str, stream: bool) -> None:
    body = chat_body(HELLO, model="no-such/model", stream=stream)
    assert_error(post_chat(server_url, body), 404, "NotFoundError", {"model"})


# -- metrics and tokenize -----------------------------------------------------------------


def test_metrics_expose_vllm_names(server_url: str) -> None:
    families = metric_samples(server_url)
    for gauge in ("vllm:num_requests_running", "vllm:num_requests_waiting"):
        assert gauge in families
        metric_value(families, gauge, gauge)
    usage = metric_value(families, "vllm:kv_cache_usage_perc", "vllm:kv_cache_usage_perc")
    assert 0.0 <= usage <= 1.0
    # The parser names a counter's family without `_total`; its samples keep it.
    for counter in ("vllm:prompt_tokens", "vllm:generation_tokens", "vllm:request_success"):
        assert counter in families, sorted(families)
        assert any(s.name == f"{counter}_total" for s in families[counter])
    for histogram in ("vllm:time_to_first_token_seconds", "vllm:e2e_request_latency_seconds"):
        assert any(s.name == f"{histogram}_count" for s in families[histogram])


def test_metrics_count_the_tokens_usage_reports(server_url: str) -> None:
    def snapshot() -> tuple[float, float, float]:
        families = metric_samples(server_url)
        return (
            metric_value(families, "vllm:prompt_tokens", "vllm:prompt_tokens_total"),
            metric_value(families, "vllm:generation_tokens", "vllm:generation_tokens_total"),
            metric_value(families, "vllm:request_success", "vllm:request_success_total"),
        )

    before = snapshot()
    response = post_chat(server_url, chat_body(HELLO, max_tokens=6))
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    expected = (
        before[0] + usage["prompt_tokens"],
        before[1] + usage["completion_tokens"],
        before[2] + 1,
    )
    # vLLM's engine reports stats a moment after the response is sent.
    wait_for(lambda: snapshot() == expected, METRICS_DEADLINE_S, "metrics match usage")


def test_tokenize_count_matches_chat_prompt_tokens(server_url: str) -> None:
    conversation = [
        {"role": "system", "content": "You are a terse support bot."},
        {"role": "user", "content": "Where is order 4567?"},
        {"role": "assistant", "content": "It ships today."},
        {"role": "user", "content": "谢谢! And the refund?"},
    ]
    for messages in (HELLO, conversation):
        tokenized = tokenize_count(server_url, messages)
        assert tokenized["count"] == len(tokenized["tokens"])
        assert tokenized["max_model_len"] == MAX_MODEL_LEN
        response = post_chat(server_url, chat_body(messages, max_tokens=1))
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["prompt_tokens"] == tokenized["count"]


# -- the project's client -----------------------------------------------------------------


@pytest.fixture
def client(server_url: str, server_kind: str) -> Iterator[VLLMClient]:
    endpoint = Endpoint(name=f"conformance-{server_kind}", url=server_url, model=MODEL)
    with VLLMClient(endpoint, timeouts=Timeouts(connect=5, first_token=60, total=120)) as c:
        yield c


def test_client_health_models_metrics(client: VLLMClient) -> None:
    assert client.health() is True
    assert client.models() == [MODEL]
    assert "vllm:num_requests_running" in client.metrics_text()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_client_chat_accounts_tokens(client: VLLMClient, stream: bool) -> None:
    request = ChatRequest(model=MODEL, messages=HELLO, max_tokens=8, temperature=0)
    result = client.chat(request, stream=stream)
    assert result.prompt_tokens > 0
    assert 0 < result.completion_tokens <= 8
    assert result.finish_reason in {"stop", "length"}
    assert 0 <= result.ttft_ms <= result.latency_ms
    assert isinstance(result.text, str)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(
    ("messages", "max_tokens"),
    [
        (OVER_BY_TOKENS, 8),
        (OVER_BY_CHARS, 8),
        (HELLO, MAX_MODEL_LEN + 1),
    ],
    ids=["prompt-tokens", "prompt-chars", "max-tokens"],
)
def test_client_raises_context_too_long(
    client: VLLMClient, messages: list[dict[str, str]], max_tokens: int, stream: bool
) -> None:
    request = ChatRequest(model=MODEL, messages=messages, max_tokens=max_tokens, temperature=0)
    with pytest.raises(ContextTooLong) as caught:
        client.chat(request, stream=stream)
    assert caught.value.status_code == 400
    assert caught.value.retryable is False


def test_client_raises_context_too_long_for_a_full_context(
    client: VLLMClient, server_url: str
) -> None:
    messages = messages_with_prompt_tokens(server_url, MAX_MODEL_LEN)
    request = ChatRequest(model=MODEL, messages=messages, max_tokens=8, temperature=0)
    for stream in (False, True):
        with pytest.raises(ContextTooLong):
            client.chat(request, stream=stream)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_client_rejects_unknown_model(client: VLLMClient, stream: bool) -> None:
    request = ChatRequest(model="no-such/model", messages=HELLO, max_tokens=8, temperature=0)
    with pytest.raises(RequestRejected) as caught:
        client.chat(request, stream=stream)
    assert caught.value.status_code == 404


# -- the async client and pool (the OpenAI-compatible endpoint's path) -------------------


def _async_endpoint(server_url: str, server_kind: str) -> Endpoint:
    return Endpoint(name=f"conformance-async-{server_kind}", url=server_url, model=MODEL)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_async_client_accounts_tokens_as_the_sync_client(
    client: VLLMClient, server_url: str, server_kind: str, stream: bool
) -> None:
    request = ChatRequest(model=MODEL, messages=HELLO, max_tokens=8, temperature=0)

    async def main() -> tuple[ChatResult, list[str]]:
        pieces: list[str] = []
        async with AsyncVLLMClient(
            _async_endpoint(server_url, server_kind),
            timeouts=Timeouts(connect=5, first_token=60, total=120),
        ) as aclient:
            if not stream:
                return await aclient.chat(request, stream=False), pieces
            async for item in aclient.stream_chat(request):
                if isinstance(item, TokenDelta):
                    pieces.append(item.text)
                else:
                    return item, pieces
        raise AssertionError("the stream ended without a result")

    result, pieces = asyncio.run(main())
    expected = client.chat(request, stream=stream)
    # The same prompt is the same number of tokens, whichever client sent it.
    assert result.prompt_tokens == expected.prompt_tokens > 0
    assert 0 < result.completion_tokens <= 8
    assert result.finish_reason in {"stop", "length"}
    if stream:
        assert "".join(pieces) == result.text


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_async_pool_raises_context_too_long_without_failing_over(
    server_url: str, server_kind: str, stream: bool
) -> None:
    endpoint = _async_endpoint(server_url, server_kind)
    pool = Pool([endpoint])
    request = ChatRequest(model=MODEL, messages=OVER_BY_TOKENS, max_tokens=8, temperature=0)

    async def main() -> None:
        try:
            await pool.achat(request, stream=stream)
        finally:
            await pool.aclose()

    with pytest.raises(ContextTooLong):
        asyncio.run(main())
    assert pool.admission.in_flight(endpoint) == 0


# -- the official OpenAI SDK --------------------------------------------------------------


@pytest.fixture
def sdk(server_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{server_url}/v1", api_key="unused", timeout=HTTP_TIMEOUT, max_retries=0
    ) as c:
        yield c


def test_openai_sdk_non_streaming(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=8, temperature=0
    )
    assert completion.model == MODEL
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason in {"stop", "length"}
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    assert 0 < completion.usage.completion_tokens <= 8
    total = completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert completion.usage.total_tokens == total
    assert [m.id for m in sdk.models.list()] == [MODEL]


def test_openai_sdk_streaming(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert len(finish) == 1 and finish[0] in {"stop", "length"}
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 8
    assert all(c.usage is None for c in chunks[:-1])


def test_openai_sdk_errors(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=MAX_MODEL_LEN + 1)
    assert bad.value.status_code == 400
    assert bad.value.param == "max_tokens"
    assert bad.value.type == "BadRequestError"
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.chat.completions.create(model="no-such/model", messages=HELLO, max_tokens=8)
    assert missing.value.param == "model"
