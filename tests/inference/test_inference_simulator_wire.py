"""The simulator's HTTP surface, checked byte-for-byte against vLLM's wire format."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from inference import Endpoint
from inference.simulator import count_prompt_tokens, render_chatml, tokenize
from inference.simulator.__main__ import build_parser

MESSAGES = [{"role": "user", "content": "Stream me, please."}]


def _post(endpoint: Endpoint, body: dict[str, Any] | str) -> httpx.Response:
    url = f"{endpoint.url}/v1/chat/completions"
    if isinstance(body, str):
        return httpx.post(url, content=body, headers={"content-type": "application/json"})
    return httpx.post(url, json=body)


def _sse_events(endpoint: Endpoint, body: dict[str, Any]) -> list[str]:
    """The `data:` payloads of a streamed response, asserting strict `data: X\\n\\n` framing."""
    with httpx.stream("POST", f"{endpoint.url}/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    blocks = raw.split("\n\n")
    assert blocks[-1] == "", "stream must end with a blank line"
    payloads = []
    for block in blocks[:-1]:
        assert block.startswith("data: ") and "\n" not in block, repr(block)
        payloads.append(block.removeprefix("data: "))
    return payloads


def _assert_error(response: httpx.Response, status: int, err_type: str, param: str | None) -> None:
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["type"] == err_type and error["code"] == status and error["param"] == param
    assert isinstance(error["message"], str) and error["message"]


def test_stream_has_role_chunk_then_content_then_finish_then_usage_then_done(
    simulator: Endpoint,
) -> None:
    body = {
        "model": simulator.model,
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    payloads = _sse_events(simulator, body)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]

    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == simulator.model
        assert (chunk["id"], chunk["created"]) == (chunks[0]["id"], chunks[0]["created"])
    assert chunks[0]["id"].startswith("chatcmpl-")

    role, *content, finish, usage = chunks
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert role["choices"][0]["finish_reason"] is None
    assert content, "expected content chunks"
    for chunk in content:
        (choice,) = chunk["choices"]
        assert set(choice["delta"]) == {"content"} and choice["delta"]["content"]
        assert choice["finish_reason"] is None
    (final,) = finish["choices"]
    assert final["delta"] == {"content": ""} and final["finish_reason"] == "stop"
    assert usage["choices"] == []
    assert usage["usage"] == {
        "prompt_tokens": count_prompt_tokens(MESSAGES),
        "total_tokens": count_prompt_tokens(MESSAGES) + len(content),
        "completion_tokens": len(content),
        "prompt_tokens_details": None,
    }


def test_stream_without_include_usage_has_no_usage_chunk(simulator: Endpoint) -> None:
    payloads = _sse_events(
        simulator, {"model": simulator.model, "messages": MESSAGES, "stream": True}
    )
    assert payloads[-1] == "[DONE]"
    last = json.loads(payloads[-2])
    assert last["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in json.loads(p) for p in payloads[:-1])


def test_non_streamed_completion_has_the_vllm_shape(simulator: Endpoint) -> None:
    response = _post(simulator, {"model": simulator.model, "messages": MESSAGES, "max_tokens": 50})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"id", "object", "created", "model", "choices", "usage"}
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["logprobs"] is None and choice["stop_reason"] is None
    assert choice["message"]["role"] == "assistant" and choice["message"]["tool_calls"] == []
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"] is None


def test_streamed_request_over_max_model_len_fails_before_any_sse(simulator: Endpoint) -> None:
    body = {"model": simulator.model, "messages": MESSAGES, "stream": True, "max_tokens": 100_000}
    _assert_error(_post(simulator, body), 400, "BadRequestError", "max_tokens")


def test_prompt_over_the_context_names_input_tokens(simulator: Endpoint) -> None:
    long = [{"role": "user", "content": "x " * 1000}]
    _assert_error(
        _post(simulator, {"model": simulator.model, "messages": long}),
        400,
        "BadRequestError",
        "input_tokens",
    )


def test_unknown_model_is_404_not_found(simulator: Endpoint) -> None:
    response = _post(simulator, {"model": "gpt-nope", "messages": MESSAGES})
    _assert_error(response, 404, "NotFoundError", "model")


@pytest.mark.parametrize(
    "body",
    ["{not json", '["a list"]', '{"model": "Qwen/Qwen-7B-Chat"}', '{"messages": []}'],
    ids=["malformed", "not-an-object", "missing-messages", "empty-messages"],
)
def test_malformed_requests_are_400_bad_request(simulator: Endpoint, body: str) -> None:
    response = _post(simulator, body)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "BadRequestError"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"seed": "x"}, "seed"),
        ({"stop": 5}, "stop"),
        ({"temperature": -0.5}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
    ],
)
def test_bad_sampling_parameters_name_their_param(
    simulator: Endpoint, extra: dict[str, Any], param: str
) -> None:
    body = {"model": simulator.model, "messages": MESSAGES, "stream": True, **extra}
    _assert_error(_post(simulator, body), 400, "BadRequestError", param)


def test_tokenize_has_the_vllm_shape(simulator: Endpoint) -> None:
    body = {"model": simulator.model, "messages": MESSAGES}
    response = httpx.post(f"{simulator.url}/tokenize", json=body)
    assert response.status_code == 200
    tokens = response.json()
    assert set(tokens) == {"count", "max_model_len", "tokens", "token_strs"}
    assert tokens["count"] == count_prompt_tokens(MESSAGES) == len(tokens["tokens"])
    assert tokens["max_model_len"] == 512 and tokens["token_strs"] is None
    bare = httpx.post(
        f"{simulator.url}/tokenize", json={**body, "add_generation_prompt": False}
    ).json()
    assert bare["tokens"] == tokens["tokens"][:-3]  # without "<|im_start|>assistant\n"


def test_stop_string_is_reported_as_the_stop_reason(simulator: Endpoint) -> None:
    response = _post(simulator, {"model": simulator.model, "messages": MESSAGES, "stop": "said"})
    (choice,) = response.json()["choices"]
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] == "said"
    assert choice["message"]["content"] == f"[simulated {simulator.model} @ sim-test] You "


def test_health_version_and_models_match_vllm(simulator: Endpoint) -> None:
    health = httpx.get(f"{simulator.url}/health")
    assert health.status_code == 200 and health.content == b""
    assert httpx.get(f"{simulator.url}/version").json()["version"] == "0.0.0-switchboard-simulator"
    models = httpx.get(f"{simulator.url}/v1/models").json()
    assert models["object"] == "list"
    (card,) = models["data"]
    assert card["id"] == card["root"] == simulator.model
    assert card["object"] == "model" and card["owned_by"] == "vllm" and card["parent"] is None
    assert card["max_model_len"] == 512 and isinstance(card["created"], int)
    assert isinstance(card["permission"], list) and card["permission"]


@pytest.mark.parametrize(
    "text",
    ["", "Hello, world!", "  leading and trailing  \n", "naïve café — 你好!", "a\tb\r\nc", "x..."],
)
def test_token_pieces_reassemble_to_the_exact_text(text: str) -> None:
    assert "".join(tokenize(text)) == text


def test_chatml_markers_count_as_single_tokens() -> None:
    messages = [{"role": "user", "content": "hi"}]
    assert render_chatml(messages) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tokenize(render_chatml(messages)) == [
        "<|im_start|>", "user", "\n", "hi", "<|im_end|>", "\n",
        "<|im_start|>", "assistant", "\n",
    ]  # fmt: skip
    assert count_prompt_tokens(messages) == 9


def test_a_reply_tokenises_the_same_inside_the_next_prompt() -> None:
    reply = "[simulated] Hello there, friend."
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "and?"},
    ]
    before = tokenize(render_chatml(messages[:1]))
    after = tokenize(render_chatml(messages))
    # The generation prompt, then the reply's pieces exactly as they were generated.
    assert after[: len(before) + len(tokenize(reply))] == [*before, *tokenize(reply)]


def test_cli_help_documents_every_option() -> None:
    text = build_parser().format_help()
    for option in (
        "--port",
        "--host",
        "--model",
        "--max-model-len",
        "--ttft-ms",
        "--token-ms",
        "--name",
        "--time-scale",
        "--max-num-seqs",
    ):
        assert option in text
