"""Prometheus metrics for the simulator, named and labelled as vLLM exposes them.

Latency histograms record *modelled* seconds (see `inference.simulator.engine`), not wall
clock: they read the same whatever `--time-scale` is and are free of event-loop jitter.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Bucket edges follow vLLM's own, trimmed to the range a single simulated GPU reaches.
_TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
)  # fmt: skip
_ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
_REQUEST_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
)  # fmt: skip
FINISH_REASONS = ("stop", "length")


class SimulatorMetrics:
    """Metrics on a private registry, so several apps can live in one process."""

    def __init__(self, model: str) -> None:
        self.registry = CollectorRegistry()
        self._model = model
        labels = ["model_name"]
        reg = self.registry

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, labels, registry=reg).labels(model_name=model)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, labels, registry=reg).labels(model_name=model)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=reg).labels(
                model_name=model
            )

        self.running = gauge("vllm:num_requests_running", "Requests in the running batch.")
        self.waiting = gauge("vllm:num_requests_waiting", "Requests queued for a batch slot.")
        self.kv_usage = gauge("vllm:kv_cache_usage_perc", "KV-cache usage, 0 to 1.")
        self.prompt_tokens = counter("vllm:prompt_tokens", "Prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Generation tokens produced.")
        self.preemptions = counter("vllm:num_preemptions", "Cumulative preemptions.")
        self.prefix_queries = counter(
            "vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache."
        )
        self.prefix_hits = counter(
            "vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache."
        )
        self._success = Counter(
            "vllm:request_success",
            "Successfully finished requests.",
            ["model_name", "finished_reason"],
            registry=reg,
        )
        self.ttft = histogram(
            "vllm:time_to_first_token_seconds", "Time to first token.", _TTFT_BUCKETS
        )
        self.itl = histogram(
            "vllm:inter_token_latency_seconds", "Time between output tokens.", _ITL_BUCKETS
        )
        self.e2e = histogram(
            "vllm:e2e_request_latency_seconds", "End-to-end request latency.", _REQUEST_BUCKETS
        )
        self.queue_time = histogram(
            "vllm:request_queue_time_seconds", "Time spent waiting for a slot.", _REQUEST_BUCKETS
        )
        # Pre-create the label sets so the series exist (at 0) before the first request.
        for reason in FINISH_REASONS:
            self._success.labels(model_name=model, finished_reason=reason)

    def success(self, finish_reason: str) -> None:
        self._success.labels(model_name=self._model, finished_reason=finish_reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
