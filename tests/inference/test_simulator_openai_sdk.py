"""The official OpenAI SDK, unchanged, against simulator processes; request features and
the prefix cache as a client sees them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from inference import Endpoint
from tests.inference.conftest import MetricValue

BLOCK = 16  # the simulator's default --block-size


@pytest.fixture(scope="module")
def sims(seeded_simulators: list[Endpoint]) -> tuple[Endpoint, Endpoint]:
    """Two servers that differ only in --seed."""
    a, b = seeded_simulators
    return a, b


@pytest.fixture(scope="module")
def sim(sims: tuple[Endpoint, Endpoint]) -> Endpoint:
    return sims[0]


@pytest.fixture
def client(sim: Endpoint) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{sim.url}/v1", api_key="x", max_retries=0) as sdk:
        yield sdk


def _messages(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


def _say(endpoint: Endpoint, text: str, **extra: Any) -> str:
    """The reply without its "[simulated MODEL @ NAME]" marker, which names the server."""
    with openai.OpenAI(base_url=f"{endpoint.url}/v1", api_key="x", max_retries=0) as sdk:
        reply = sdk.chat.completions.create(
            model=endpoint.model,
            messages=_messages(text),  # type: ignore[arg-type]
            **extra,
        )
    text = reply.choices[0].message.content or ""
    assert text.startswith(f"[simulated {endpoint.model} @ {endpoint.name}] ")
    return text.split("] ", 1)[1]


def _tokenize(endpoint: Endpoint, **body: Any) -> dict[str, Any]:
    response = httpx.post(f"{endpoint.url}/tokenize", json={"model": endpoint.model, **body})
    assert response.status_code == 200
    return response.json()


def test_sdk_non_streaming_completion_with_usage(client: openai.OpenAI, sim: Endpoint) -> None:
    reply = client.chat.completions.create(
        model=sim.model,
        messages=_messages("Hello from the SDK"),  # type: ignore[arg-type]
        max_tokens=300,
    )
    (choice,) = reply.choices
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    text = choice.message.content or ""
    assert text.startswith(f"[simulated {sim.model} @ sdk-a] You said: Hello from the SDK ")
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_sdk_stream_with_usage_joins_up_to_the_non_streamed_reply(
    client: openai.OpenAI, sim: Endpoint
) -> None:
    request: dict[str, Any] = {
        "model": sim.model,
        "messages": _messages("Stream it"),
        "seed": 5,
        "temperature": 0.9,
    }
    whole = client.chat.completions.create(**request)
    stream = client.chat.completions.create(
        **request, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert "".join(pieces) == whole.choices[0].message.content
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage == whole.usage


def test_tokenize_counts_agree_with_usage(client: openai.OpenAI, sim: Endpoint) -> None:
    messages = _messages("How many tokens is this, exactly?")
    counted = _tokenize(sim, messages=messages)
    assert counted["max_model_len"] == 512
    assert counted["count"] == len(counted["tokens"]) and counted["token_strs"] is None
    assert all(isinstance(t, int) for t in counted["tokens"])
    reply = client.chat.completions.create(model=sim.model, messages=messages, max_tokens=1)  # type: ignore[arg-type]
    assert reply.usage is not None and reply.usage.prompt_tokens == counted["count"]
    # A raw prompt is tokenised as given, without the chat template's markers.
    plain = _tokenize(sim, prompt="How many tokens", return_token_strs=True)
    assert plain["token_strs"] == ["How", " many", " tokens"] and plain["count"] == 3


def test_tokenize_rejects_an_unknown_model(sim: Endpoint) -> None:
    response = httpx.post(f"{sim.url}/tokenize", json={"model": "nope", "prompt": "hi"})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "NotFoundError"


@pytest.mark.parametrize("stream", [False, True])
def test_max_tokens_truncates_with_finish_reason_length(
    client: openai.OpenAI, sim: Endpoint, stream: bool
) -> None:
    request: dict[str, Any] = {"model": sim.model, "messages": _messages("Go on"), "seed": 3}
    full = client.chat.completions.create(**request)
    assert full.usage is not None and full.usage.completion_tokens > 15  # the filler at work
    if stream:
        chunks = list(
            client.chat.completions.create(
                **request, max_tokens=15, stream=True, stream_options={"include_usage": True}
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        usage = chunks[-1].usage
    else:
        short = client.chat.completions.create(**request, max_tokens=15)
        text, finish, usage = (
            short.choices[0].message.content or "",
            short.choices[0].finish_reason,
            short.usage,
        )
    assert finish == "length"
    assert usage is not None and usage.completion_tokens == 15
    assert (full.choices[0].message.content or "").startswith(text) and text


def test_large_max_tokens_still_ends_naturally(client: openai.OpenAI, sim: Endpoint) -> None:
    reply = client.chat.completions.create(
        model=sim.model,
        messages=_messages("Short please"),
        max_tokens=400,  # type: ignore[arg-type]
    )
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and 20 <= reply.usage.completion_tokens <= 120


@pytest.mark.parametrize("stop", ["said", ["zzz-never", "said"]])
def test_stop_strings_cut_before_the_stop_and_finish_with_stop(
    client: openai.OpenAI, sim: Endpoint, stop: str | list[str]
) -> None:
    reply = client.chat.completions.create(
        model=sim.model,
        messages=_messages("Cut me"),
        stop=stop,  # type: ignore[arg-type]
    )
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.content == f"[simulated {sim.model} @ sdk-a] You "
    chunks = list(
        client.chat.completions.create(
            model=sim.model,
            messages=_messages("Cut me"),
            stop=stop,
            stream=True,  # type: ignore[arg-type]
        )
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks)
        == reply.choices[0].message.content
    )


def test_n_other_than_one_is_a_bad_request(client: openai.OpenAI, sim: Endpoint) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=sim.model, messages=_messages("two"), n=2)  # type: ignore[arg-type]
    assert caught.value.status_code == 400
    assert caught.value.body is not None and caught.value.body["param"] == "n"  # type: ignore[index]


def test_unknown_model_is_not_found_for_the_sdk(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no/such", messages=_messages("hi"))  # type: ignore[arg-type]


def test_same_seed_gives_the_same_text_and_overrides_the_server_seed(
    sims: tuple[Endpoint, Endpoint],
) -> None:
    a, b = sims
    first = _say(a, "Same seed?", seed=1234, temperature=1.0)
    assert first == _say(a, "Same seed?", seed=1234, temperature=1.0)
    assert first == _say(b, "Same seed?", seed=1234, temperature=1.0)


def test_server_seed_applies_when_the_request_has_none(sims: tuple[Endpoint, Endpoint]) -> None:
    a, b = sims
    prompts = ["one", "two", "three", "four"]
    from_a = [_say(a, p, temperature=0.8) for p in prompts]
    assert from_a == [_say(a, p, temperature=0.8) for p in prompts]  # deterministic
    assert from_a != [_say(b, p, temperature=0.8) for p in prompts]  # --seed matters
    # Greedy decoding does not sample, so the seed cannot matter.
    assert _say(a, "greedy", temperature=0) == _say(b, "greedy", temperature=0)


def test_repeated_long_prompt_hits_the_prefix_cache_and_has_a_lower_ttft(
    sim: Endpoint, metric_value: MetricValue
) -> None:
    labels = {"model_name": sim.model}
    # A prompt no other test sends, so its blocks cannot already be cached.
    messages = _messages("prefix-cache probe " + " ".join(f"w{n}" for n in range(250)))
    prompt_tokens = _tokenize(sim, messages=messages)["count"]
    assert prompt_tokens % BLOCK != 0  # keeps "all full blocks" and vLLM's len-1 rule equal
    full_blocks = prompt_tokens // BLOCK * BLOCK

    def send() -> tuple[float, float]:
        hits = metric_value(sim.url, "vllm:prefix_cache_hits_total", **labels)
        ttft = metric_value(sim.url, "vllm:time_to_first_token_seconds_sum", **labels)
        body = {"model": sim.model, "messages": messages, "max_tokens": 2}
        assert httpx.post(f"{sim.url}/v1/chat/completions", json=body).status_code == 200
        return (
            metric_value(sim.url, "vllm:prefix_cache_hits_total", **labels) - hits,
            metric_value(sim.url, "vllm:time_to_first_token_seconds_sum", **labels) - ttft,
        )

    cold_hits, cold_ttft = send()
    warm_hits, warm_ttft = send()
    assert cold_hits == 0
    assert warm_hits == full_blocks
    # Modelled TTFT: one 10 ms step + 0.05 ms per uncached prompt token (the defaults).
    assert cold_ttft == pytest.approx((10 + 0.05 * prompt_tokens) / 1000)
    assert warm_ttft == pytest.approx((10 + 0.05 * (prompt_tokens - full_blocks)) / 1000)
    assert warm_ttft < cold_ttft
