"""VLLMClient against a real simulator subprocess."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from inference import (
    ChatRequest,
    ContextTooLong,
    Endpoint,
    EndpointDown,
    RequestRejected,
    VLLMClient,
)


def _request(
    endpoint: Endpoint, text: str = "Hello, simulator!", max_tokens: int = 200
) -> ChatRequest:
    messages = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": text})
    return ChatRequest(
        model=endpoint.model, messages=messages, max_tokens=max_tokens, temperature=0.0
    )


def _sample(metrics_text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {name} {labels}")


def test_streamed_and_non_streamed_results_agree_on_text_and_usage(simulator: Endpoint) -> None:
    request = _request(simulator)
    with VLLMClient(simulator) as client:
        streamed = client.chat(request, stream=True)
        whole = client.chat(request, stream=False)
    assert streamed.text == whole.text
    assert streamed.finish_reason == whole.finish_reason == "stop"
    assert streamed.prompt_tokens == whole.prompt_tokens > 0
    assert streamed.completion_tokens == whole.completion_tokens > 0
    assert streamed.endpoint == whole.endpoint == simulator


def test_reply_is_marked_as_simulated_and_echoes_the_last_user_message(simulator: Endpoint) -> None:
    with VLLMClient(simulator) as client:
        result = client.chat(_request(simulator, "What is the weather?"))
    assert result.text == f"[simulated {simulator.model} @ sim-test] You said: What is the weather?"


@pytest.mark.parametrize("stream", [True, False])
def test_time_to_first_token_never_exceeds_total_latency(simulator: Endpoint, stream: bool) -> None:
    with VLLMClient(simulator) as client:
        result = client.chat(_request(simulator), stream=stream)
    assert 0 < result.ttft_ms <= result.latency_ms


@pytest.mark.parametrize("stream", [True, False])
def test_small_max_tokens_truncates_with_length_finish_reason(
    simulator: Endpoint, stream: bool
) -> None:
    with VLLMClient(simulator) as client:
        full = client.chat(_request(simulator), stream=stream)
        short = client.chat(_request(simulator, max_tokens=3), stream=stream)
    assert short.finish_reason == "length"
    assert short.completion_tokens == 3
    assert full.text.startswith(short.text) and short.text != full.text


def test_prompt_plus_max_tokens_over_the_context_is_truncated_not_rejected(
    simulator: Endpoint,
) -> None:
    # The reply echoes the prompt, so it cannot fit in what the prompt leaves of the
    # 512-token context (the fixture's --max-model-len) even though max_tokens alone is fine.
    with VLLMClient(simulator) as client:
        result = client.chat(_request(simulator, "word " * 300, max_tokens=500))
    assert result.prompt_tokens + 500 > 512
    assert result.finish_reason == "length"
    assert result.prompt_tokens + result.completion_tokens == 512


@pytest.mark.parametrize("stream", [True, False])
def test_max_tokens_over_the_model_length_is_context_too_long(
    simulator: Endpoint, stream: bool
) -> None:
    with VLLMClient(simulator) as client, pytest.raises(ContextTooLong) as caught:
        client.chat(_request(simulator, max_tokens=10_000), stream=stream)
    assert caught.value.retryable is False
    assert caught.value.status_code == 400


def test_prompt_longer_than_the_context_is_context_too_long(simulator: Endpoint) -> None:
    with VLLMClient(simulator) as client, pytest.raises(ContextTooLong):
        client.chat(_request(simulator, "too long " * 400, max_tokens=5))


@pytest.mark.parametrize("stream", [True, False])
def test_unknown_model_is_rejected_and_not_retryable(simulator: Endpoint, stream: bool) -> None:
    request = ChatRequest(
        model="no/such-model",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=5,
        temperature=0,
    )
    with VLLMClient(simulator) as client, pytest.raises(RequestRejected) as caught:
        client.chat(request, stream=stream)
    assert caught.value.status_code == 404
    assert caught.value.retryable is False


@pytest.mark.parametrize("stream", [True, False])
def test_closed_port_is_endpoint_down(closed_endpoint: Endpoint, stream: bool) -> None:
    with VLLMClient(closed_endpoint) as client, pytest.raises(EndpointDown) as caught:
        client.chat(_request(closed_endpoint), stream=stream)
    assert caught.value.retryable is True
    assert caught.value.endpoint == closed_endpoint


def test_health_is_true_for_a_live_server_and_false_for_a_closed_port(
    simulator: Endpoint, closed_endpoint: Endpoint
) -> None:
    with VLLMClient(simulator) as live, VLLMClient(closed_endpoint) as dead:
        assert live.health() is True
        assert dead.health() is False


def test_models_lists_the_served_model(simulator: Endpoint) -> None:
    with VLLMClient(simulator) as client:
        assert client.models() == [simulator.model]


def test_metrics_use_vllm_names_and_count_each_request(simulator: Endpoint) -> None:
    labels = {"model_name": simulator.model}
    with VLLMClient(simulator) as client:
        before = client.metrics_text()
        result = client.chat(_request(simulator))
        after = client.metrics_text()

    names = {family.name for family in text_string_to_metric_families(after)}
    assert {
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prompt_tokens",
        "vllm:generation_tokens",
        "vllm:request_success",
        "vllm:time_to_first_token_seconds",
        "vllm:e2e_request_latency_seconds",
    } <= names
    for family in text_string_to_metric_families(after):
        for sample in family.samples:
            assert sample.labels.get("model_name") == simulator.model, sample

    def delta(name: str, **extra: str) -> float:
        return _sample(after, name, **labels, **extra) - _sample(before, name, **labels, **extra)

    assert delta("vllm:generation_tokens_total") == result.completion_tokens
    assert delta("vllm:prompt_tokens_total") == result.prompt_tokens
    assert delta("vllm:request_success_total", finished_reason="stop") == 1
    assert delta("vllm:e2e_request_latency_seconds_count") == 1
    assert _sample(after, "vllm:num_requests_running", **labels) == 0
