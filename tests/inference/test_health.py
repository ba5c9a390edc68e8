"""Health: parsing vLLM's /metrics, probing endpoints, and the monitor feeding the pool."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from inference import (
    ChatRequest,
    Endpoint,
    EngineStats,
    HealthMonitor,
    InferenceError,
    Pool,
    RouteContext,
    Timeouts,
    VLLMClient,
    parse_vllm_metrics,
    probe,
)
from tests.inference.support import SimProcess, running_simulators, wait_until

MODEL = "Qwen/Qwen-7B-Chat"
REQUEST = ChatRequest(
    model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=8, temperature=0
)

# vLLM's exposition: prometheus_client output with per-engine label sets.
VLLM_V1_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="Qwen/Qwen-7B-Chat"} 3.0
vllm:num_requests_running{engine="1",model_name="Qwen/Qwen-7B-Chat"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="Qwen/Qwen-7B-Chat"} 4.0
vllm:num_requests_waiting{engine="1",model_name="Qwen/Qwen-7B-Chat"} 1.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen-7B-Chat"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="Qwen/Qwen-7B-Chat"} 0.75
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="Qwen/Qwen-7B-Chat"} 600.0
vllm:prefix_cache_queries_total{engine="1",model_name="Qwen/Qwen-7B-Chat"} 400.0
# HELP vllm:prefix_cache_queries_created Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_created gauge
vllm:prefix_cache_queries_created{engine="0",model_name="Qwen/Qwen-7B-Chat"} 1.7e+09
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="Qwen/Qwen-7B-Chat"} 150.0
vllm:prefix_cache_hits_total{engine="1",model_name="Qwen/Qwen-7B-Chat"} 100.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="Qwen/Qwen-7B-Chat"} 3.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="Qwen/Qwen-7B-Chat"} 5.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="Qwen/Qwen-7B-Chat"} 5.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="Qwen/Qwen-7B-Chat"} 0.4
"""

# An older vLLM (V0): the KV gauge had another name and there were no prefix counters.
VLLM_V0_METRICS = """\
# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="meta-llama/Llama-3-8B"} 7.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="meta-llama/Llama-3-8B"} 2.0
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="meta-llama/Llama-3-8B"} 0.5
"""


# -- parsing --------------------------------------------------------------------------------


def test_running_and_waiting_are_summed_over_label_sets() -> None:
    stats = parse_vllm_metrics(VLLM_V1_METRICS)
    assert stats.healthy
    assert stats.running == 5.0
    assert stats.waiting == 5.0


def test_kv_cache_usage_is_read_from_the_new_gauge_name() -> None:
    assert parse_vllm_metrics(VLLM_V1_METRICS).kv_cache_usage == 0.75  # the fullest engine


def test_kv_cache_usage_is_read_from_the_old_gauge_name() -> None:
    stats = parse_vllm_metrics(VLLM_V0_METRICS)
    assert stats.kv_cache_usage == 0.5
    assert (stats.running, stats.waiting) == (7.0, 2.0)


def test_prefix_hit_rate_is_hits_over_queries_summed_over_engines() -> None:
    assert parse_vllm_metrics(VLLM_V1_METRICS).prefix_cache_hit_rate == pytest.approx(0.25)


def test_counters_declared_without_the_total_suffix_are_read_too() -> None:
    # prometheus_client itself declares `# TYPE name counter` and emits `name_total`.
    text = """\
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{model_name="m"} 200.0
vllm:prefix_cache_queries_created{model_name="m"} 1.7e+09
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{model_name="m"} 50.0
vllm:prefix_cache_hits_created{model_name="m"} 1.7e+09
"""
    assert parse_vllm_metrics(text).prefix_cache_hit_rate == pytest.approx(0.25)


def test_without_prefix_counters_or_queries_there_is_no_hit_rate() -> None:
    assert parse_vllm_metrics(VLLM_V0_METRICS).prefix_cache_hit_rate is None
    zero = "vllm:prefix_cache_queries_total 0\nvllm:prefix_cache_hits_total 0\n"
    assert parse_vllm_metrics(zero).prefix_cache_hit_rate is None


def test_missing_metrics_read_as_zero() -> None:
    stats = parse_vllm_metrics("")
    assert (stats.running, stats.waiting, stats.kv_cache_usage) == (0.0, 0.0, 0.0)


# -- probing --------------------------------------------------------------------------------


@pytest.fixture
def loaded_simulator(tmp_path: Path) -> Iterator[SimProcess]:
    """A simulator that runs one sequence at a time, for a test that fills it up."""
    flags = ["--max-num-seqs", "1", "--time-scale", "0.01"]
    with running_simulators(tmp_path, ("sim-health", flags)) as sims:
        yield sims[0]


def test_probe_of_a_live_simulator_is_healthy_and_reports_its_load(
    loaded_simulator: SimProcess,
) -> None:
    sim = loaded_simulator
    endpoint = sim.endpoint
    with VLLMClient(endpoint) as client:
        client.chat(REQUEST)  # something for the prefix-cache counters to count
    # Every request now stalls a minute before its first token while holding its place:
    # one runs (--max-num-seqs 1) and one waits, for as long as the test needs.
    sim.set_faults(latency_spike_rate=1.0, latency_spike_ms=6_000_000)
    outcomes: list[BaseException | None] = []

    def stalled_request() -> None:
        with VLLMClient(endpoint, timeouts=Timeouts(first_token=60, total=60)) as client:
            try:
                client.chat(REQUEST)
                outcomes.append(None)
            except InferenceError as exc:
                outcomes.append(exc)

    threads = [threading.Thread(target=stalled_request, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    with httpx.Client(timeout=5.0) as http:
        wait_until(lambda: probe(endpoint, http).waiting == 1.0, 10.0, "one running, one waiting")
        stats = probe(endpoint, http)
    assert stats.healthy and not stats.error
    assert (stats.running, stats.waiting) == (1.0, 1.0)
    assert 0.0 < stats.kv_cache_usage <= 1.0
    assert stats.prefix_cache_hit_rate is not None
    assert 0.0 <= stats.prefix_cache_hit_rate <= 1.0
    sim.kill()  # the stalled requests fail now instead of in a minute
    for thread in threads:
        thread.join(10.0)
    assert len(outcomes) == 2 and all(isinstance(o, InferenceError) for o in outcomes)


def test_probe_of_a_closed_port_is_unhealthy_with_an_error(closed_endpoint: Endpoint) -> None:
    with httpx.Client(timeout=2.0) as http:
        stats = probe(closed_endpoint, http)
    assert not stats.healthy
    assert "ConnectError" in stats.error


def test_probe_of_a_failing_health_check_is_unhealthy() -> None:
    endpoint = Endpoint(name="sick", url="http://sick.test:8000", model=MODEL)
    transport = httpx.MockTransport(lambda request: httpx.Response(503))
    with httpx.Client(transport=transport) as http:
        stats = probe(endpoint, http)
    assert not stats.healthy
    assert "503" in stats.error


def test_an_endpoint_that_serves_but_hides_its_metrics_stays_routable() -> None:
    endpoint = Endpoint(name="quiet", url="http://quiet.test:8000", model=MODEL)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200 if request.url.path == "/health" else 404)

    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        stats = probe(endpoint, http)
    assert stats.healthy
    assert "404" in stats.error


# -- monitor and pool -----------------------------------------------------------------------


class _SwitchableFleet:
    """Fake /health and /metrics per endpoint, with health switchable at run time."""

    def __init__(self, endpoints: list[Endpoint]) -> None:
        self.healthy = {e.url: True for e in endpoints}
        self.waiting = {e.url: 0.0 for e in endpoints}

    def handler(self, request: httpx.Request) -> httpx.Response:
        base = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        if request.url.path == "/health":
            return httpx.Response(200 if self.healthy[base] else 503)
        return httpx.Response(200, text=f"vllm:num_requests_waiting {self.waiting[base]}\n")


def _monitored_pool() -> tuple[Pool, HealthMonitor, _SwitchableFleet, list[Endpoint]]:
    endpoints = [
        Endpoint(name=f"ep{i}", url=f"http://10.0.0.{i}:8000", model=MODEL) for i in range(2)
    ]
    fleet = _SwitchableFleet(endpoints)
    pool = Pool(endpoints)
    monitor = HealthMonitor(
        pool.endpoints, pool.update_stats, transport=httpx.MockTransport(fleet.handler)
    )
    return pool, monitor, fleet, endpoints


def _routable(pool: Pool) -> list[Endpoint]:
    return pool.candidates(REQUEST, RouteContext())


def test_an_endpoint_polled_unhealthy_is_not_routed_to_until_it_recovers() -> None:
    pool, monitor, fleet, (ep0, ep1) = _monitored_pool()
    with pool:
        fleet.waiting[ep1.url] = 3.0
        results = dict(monitor.poll_once())
        assert results[ep1].waiting == 3.0
        assert pool.stats(ep1) == results[ep1]
        assert set(_routable(pool)) == {ep0, ep1}

        fleet.healthy[ep0.url] = False
        monitor.poll_once()
        assert pool.stats(ep0) is not None and not pool.stats(ep0).healthy
        assert _routable(pool) == [ep1]
        snapshot = {s.endpoint.name: s for s in pool.snapshot()}
        assert snapshot["ep0"].stats is not None and not snapshot["ep0"].stats.healthy

        fleet.healthy[ep0.url] = True
        monitor.poll_once()
        assert set(_routable(pool)) == {ep0, ep1}
    monitor.stop()


def test_the_servers_waiting_queue_from_metrics_steers_least_loaded_routing() -> None:
    pool, monitor, fleet, (ep0, ep1) = _monitored_pool()
    with pool:
        fleet.waiting[ep0.url] = 10.0
        monitor.poll_once()
        ranked = pool.candidates(REQUEST, RouteContext())  # no key: least loaded
        assert ranked == [ep1, ep0]
    monitor.stop()


def test_the_background_monitor_polls_until_stopped() -> None:
    pool, monitor, fleet, (ep0, ep1) = _monitored_pool()
    seen: list[Endpoint] = []
    done = threading.Event()

    def record(endpoint: Endpoint, stats: EngineStats) -> None:
        pool.update_stats(endpoint, stats)
        seen.append(endpoint)
        if len(seen) >= 4:  # two full rounds
            done.set()

    monitor = HealthMonitor(
        pool.endpoints,
        record,
        interval_s=0.01,
        transport=httpx.MockTransport(fleet.handler),
    )
    monitor.start()
    try:
        assert done.wait(10.0)
    finally:
        monitor.stop()
    assert {ep0, ep1} <= set(seen)
    assert pool.stats(ep0) is not None and pool.stats(ep0).healthy
    pool.close()
