"""Each fault-injection flag, as a client sees it, plus run-time changes via /_sim/faults."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from inference import Endpoint
from tests.inference.conftest import LaunchSimulators, MetricValue

FAST = ["--time-scale", "0.001"]
HANG_TIMEOUT = httpx.Timeout(5.0, read=0.3)  # a client that gives up quickly on silence
CHAT = {"messages": [{"role": "user", "content": "Are you well?"}]}


# Every fault flag at once: precedence (error, hang, then spike and die) shows only the
# first, so each test turns off, through /_sim/faults, the ones that would mask its own.
ALL_FAULTS = [
    "--error-rate", "1", "--hang-rate", "1", "--die-mid-stream-rate", "1",
    "--latency-spike-rate", "1", "--latency-spike-ms", "3000",
]  # fmt: skip
STARTUP_FAULTS = {
    "error_rate": 1.0,
    "latency_spike_rate": 1.0,
    "latency_spike_ms": 3000.0,
    "hang_rate": 1.0,
    "die_mid_stream_rate": 1.0,
}


@pytest.fixture(scope="module")
def sims(launch_simulators: LaunchSimulators) -> dict[str, Endpoint]:
    # Processes are slow to start, so the module shares two.
    endpoints = launch_simulators(
        ("faulty", [*FAST, *ALL_FAULTS]),
        ("refuse", [*FAST, "--refuse-connections"]),
    )
    return {endpoint.name: endpoint for endpoint in endpoints}


@pytest.fixture
def faulty(sims: dict[str, Endpoint]) -> Iterator[Endpoint]:
    """The all-faults server, put back to its startup settings after each test."""
    endpoint = sims["faulty"]
    assert httpx.get(f"{endpoint.url}/_sim/faults").json() == STARTUP_FAULTS
    try:
        yield endpoint
    finally:
        assert _set_faults(endpoint, **STARTUP_FAULTS).status_code == 200


def _chat(
    endpoint: Endpoint, *, timeout: httpx.Timeout | float = 10.0, **extra: Any
) -> httpx.Response:
    body = {"model": endpoint.model, **CHAT, **extra}
    return httpx.post(f"{endpoint.url}/v1/chat/completions", json=body, timeout=timeout)


def _set_faults(endpoint: Endpoint, **changes: Any) -> httpx.Response:
    return httpx.post(f"{endpoint.url}/_sim/faults", json=changes)


def _turn_off(endpoint: Endpoint, *faults: str) -> None:
    response = _set_faults(endpoint, **dict.fromkeys(faults, 0))
    assert response.status_code == 200, response.text


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["type"] == "ServiceUnavailableError" and error["code"] == 503
    assert error["param"] is None and "simulated" in error["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_error_rate_answers_503_before_any_stream(faulty: Endpoint, stream: bool) -> None:
    _assert_unavailable(_chat(faulty, stream=stream))


def test_errors_are_only_for_valid_chat_requests(faulty: Endpoint) -> None:
    assert httpx.get(f"{faulty.url}/health").status_code == 200
    assert _chat(faulty, model="nope").status_code == 404  # validation still comes first


@pytest.mark.parametrize("stream", [False, True])
def test_hang_sends_nothing_until_the_client_gives_up(faulty: Endpoint, stream: bool) -> None:
    _turn_off(faulty, "error_rate")
    with pytest.raises(httpx.ReadTimeout):
        _chat(faulty, timeout=HANG_TIMEOUT, stream=stream)
    # The server itself is fine: other routes answer while requests hang.
    assert httpx.get(f"{faulty.url}/health").status_code == 200


def test_die_mid_stream_breaks_the_stream_without_done(
    faulty: Endpoint, metric_value: MetricValue
) -> None:
    _turn_off(faulty, "error_rate", "hang_rate")
    labels = {"model_name": faulty.model, "finished_reason": "stop"}
    before = metric_value(faulty.url, "vllm:request_success_total", **labels)
    lines: list[str] = []
    body = {"model": faulty.model, **CHAT, "stream": True}
    url = f"{faulty.url}/v1/chat/completions"
    with (
        pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)),
        httpx.stream("POST", url, json=body) as response,
    ):
        assert response.status_code == 200
        lines.extend(line for line in response.iter_lines() if line)
    assert lines, "expected some tokens before the connection dropped"
    assert "data: [DONE]" not in lines
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)
    content = [c for c in chunks if "content" in c["choices"][0]["delta"]][1:]  # after role
    assert 1 <= len(content) <= 4
    # The broken request is not a success, and it gave back its batch slot.
    assert metric_value(faulty.url, "vllm:request_success_total", **labels) == before
    assert metric_value(faulty.url, "vllm:num_requests_running", model_name=faulty.model) == 0


def test_die_mid_stream_truncates_a_non_streamed_body(faulty: Endpoint) -> None:
    _turn_off(faulty, "error_rate", "hang_rate")
    with pytest.raises(httpx.RemoteProtocolError):
        _chat(faulty)


def test_latency_spike_delays_the_first_token_by_the_configured_model_time(
    faulty: Endpoint, metric_value: MetricValue
) -> None:
    _turn_off(faulty, "error_rate", "hang_rate", "die_mid_stream_rate")
    labels = {"model_name": faulty.model}
    before = metric_value(faulty.url, "vllm:time_to_first_token_seconds_sum", **labels)
    response = _chat(faulty, max_tokens=3)
    assert response.status_code == 200
    prompt_tokens = response.json()["usage"]["prompt_tokens"]
    ttft = metric_value(faulty.url, "vllm:time_to_first_token_seconds_sum", **labels) - before
    # 3000 ms spike + one 10 ms step + 0.05 ms per (uncached) prompt token, modelled.
    assert ttft == pytest.approx((3000 + 10 + 0.05 * prompt_tokens) / 1000)


def test_refuse_connections_is_connection_refused(sims: dict[str, Endpoint]) -> None:
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{sims['refuse'].url}/health", timeout=5.0)


def test_faults_can_be_changed_at_run_time(faulty: Endpoint) -> None:
    cleared = _set_faults(
        faulty, error_rate=0, hang_rate=0, die_mid_stream_rate=0, latency_spike_rate=0
    )
    assert cleared.status_code == 200
    assert httpx.get(f"{faulty.url}/_sim/faults").json() == {
        **STARTUP_FAULTS,
        "error_rate": 0.0,
        "hang_rate": 0.0,
        "die_mid_stream_rate": 0.0,
        "latency_spike_rate": 0.0,
    }
    assert _chat(faulty).status_code == 200
    updated = _set_faults(faulty, error_rate=1)
    assert updated.status_code == 200 and updated.json()["error_rate"] == 1.0
    _assert_unavailable(_chat(faulty))
    assert _set_faults(faulty, error_rate=0).status_code == 200
    assert _chat(faulty).status_code == 200


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"error_rate": 2}, "error_rate"),
        ({"hang_rate": "often"}, "hang_rate"),
        ({"no_such_fault": 1}, "no_such_fault"),
        ({"refuse_connections": True}, "refuse_connections"),
    ],
)
def test_bad_fault_changes_are_400_and_change_nothing(
    faulty: Endpoint, changes: dict[str, Any], param: str
) -> None:
    response = _set_faults(faulty, **changes)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "BadRequestError" and error["param"] == param
    assert httpx.get(f"{faulty.url}/_sim/faults").json() == STARTUP_FAULTS


def _wait_for_gauge(
    endpoint: Endpoint, metric_value: MetricValue, name: str, value: float, within_s: float
) -> None:
    deadline = time.monotonic() + within_s
    while metric_value(endpoint.url, name, model_name=endpoint.model) != value:
        assert time.monotonic() < deadline, f"{name} never reached {value}"


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_gives_up_frees_its_batch_slot(
    faulty: Endpoint, metric_value: MetricValue, stream: bool
) -> None:
    # A spike of 10,000 model seconds is 10 s here: far longer than this test waits, so
    # the slot can only come back through the disconnect.
    _turn_off(faulty, "error_rate", "hang_rate", "die_mid_stream_rate")
    assert _set_faults(faulty, latency_spike_ms=10_000_000).status_code == 200
    running = "vllm:num_requests_running"
    body = json.dumps({"model": faulty.model, **CHAT, "stream": stream}).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: sim\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    url = httpx.URL(faulty.url)
    # A raw socket, so "giving up" is an explicit close rather than a client timeout.
    with socket.create_connection((url.host, url.port or 80), timeout=5.0) as sock:
        sock.sendall(head.encode() + body)
        _wait_for_gauge(faulty, metric_value, running, 1, within_s=5.0)
    _wait_for_gauge(faulty, metric_value, running, 0, within_s=5.0)
    assert metric_value(faulty.url, "vllm:kv_cache_usage_perc", model_name=faulty.model) == 0
