"""Batch slots and the waiting queue, observed through /metrics of a simulator process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from inference import Endpoint
from tests.inference.conftest import MetricValue

DEADLINE_S = 20.0


@pytest.fixture
def sim(seeded_simulators: list[Endpoint]) -> Iterator[Endpoint]:
    """The shared server with two batch slots, each request holding its slot ~0.2 s.

    A latency spike keeps a request in the running batch (with its slot and blocks) until
    its first token, so the spike is what makes the queue form: 20 s of model time at the
    server's --time-scale 0.01, long enough for a poller to see it.
    """
    endpoint = seeded_simulators[1]
    url = f"{endpoint.url}/_sim/faults"
    spiking = httpx.post(url, json={"latency_spike_rate": 1, "latency_spike_ms": 20_000})
    assert spiking.status_code == 200
    try:
        yield endpoint
    finally:
        httpx.post(url, json={"latency_spike_rate": 0, "latency_spike_ms": 2000})


def test_requests_beyond_max_num_seqs_wait_and_all_complete(
    sim: Endpoint, metric_value: MetricValue
) -> None:
    labels = {"model_name": sim.model}
    body = {"model": sim.model, "messages": [{"role": "user", "content": "queue me"}]}
    queued_before = metric_value(sim.url, "vllm:request_queue_time_seconds_count", **labels)

    def call(_: int) -> httpx.Response:
        return httpx.post(f"{sim.url}/v1/chat/completions", json=body, timeout=DEADLINE_S)

    with ThreadPoolExecutor(max_workers=5) as pool:
        futures = [pool.submit(call, n) for n in range(5)]
        running, waiting = [], []
        deadline = time.monotonic() + DEADLINE_S
        while not all(f.done() for f in futures) and time.monotonic() < deadline:
            running.append(metric_value(sim.url, "vllm:num_requests_running", **labels))
            waiting.append(metric_value(sim.url, "vllm:num_requests_waiting", **labels))
        responses = [f.result(timeout=DEADLINE_S) for f in futures]

    assert max(waiting) >= 1, f"never saw a queued request: {waiting}"
    assert max(running) <= 2
    assert [r.status_code for r in responses] == [200] * 5
    assert all(r.json()["choices"][0]["finish_reason"] == "stop" for r in responses)
    assert metric_value(sim.url, "vllm:num_requests_waiting", **labels) == 0
    assert metric_value(sim.url, "vllm:num_requests_running", **labels) == 0
    queued = metric_value(sim.url, "vllm:request_queue_time_seconds_count", **labels)
    assert queued - queued_before == 5
