"""Prometheus metrics for the simulator, named and labelled as vLLM exposes them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_E2E_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Nominal KV-cache capacity, in full contexts; the usage gauge is cosmetic but moves
# with load, which is all a dashboard or a load test needs from it.
_KV_CONTEXTS = 4


class SimulatorMetrics:
    """Metrics on a private registry, so several apps can live in one process."""

    def __init__(self, model: str, max_model_len: int) -> None:
        self.registry = CollectorRegistry()
        self._model = model
        self._kv_capacity = max_model_len * _KV_CONTEXTS
        self._kv_tokens = 0
        labels = ["model_name"]
        reg = self.registry
        self.running = Gauge(
            "vllm:num_requests_running", "Requests currently generating.", labels, registry=reg
        ).labels(model_name=model)
        # The simulator schedules every request at once, so nothing ever waits; the gauge
        # exists because dashboards and autoscalers expect it.
        self.waiting = Gauge(
            "vllm:num_requests_waiting", "Requests queued for scheduling.", labels, registry=reg
        ).labels(model_name=model)
        self.kv_usage = Gauge(
            "vllm:kv_cache_usage_perc", "KV-cache usage, 0 to 1.", labels, registry=reg
        ).labels(model_name=model)
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Prefill tokens processed.", labels, registry=reg
        ).labels(model_name=model)
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Generation tokens produced.", labels, registry=reg
        ).labels(model_name=model)
        self._success = Counter(
            "vllm:request_success",
            "Finished requests by finish reason.",
            ["model_name", "finished_reason"],
            registry=reg,
        )
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Time to first token.",
            labels,
            buckets=_TTFT_BUCKETS,
            registry=reg,
        ).labels(model_name=model)
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "End-to-end request latency.",
            labels,
            buckets=_E2E_BUCKETS,
            registry=reg,
        ).labels(model_name=model)
        self.waiting.set(0)
        self.kv_usage.set(0)
        # Pre-create both label sets so the series exist (at 0) before the first request.
        for reason in ("stop", "length"):
            self._success.labels(model_name=model, finished_reason=reason)

    def success(self, finish_reason: str) -> None:
        self._success.labels(model_name=self._model, finished_reason=finish_reason).inc()

    def hold_kv(self, tokens: int) -> None:
        """Account `tokens` (negative to release) as resident in the KV cache."""
        self._kv_tokens = max(0, self._kv_tokens + tokens)
        self.kv_usage.set(min(1.0, self._kv_tokens / self._kv_capacity))

    def render(self) -> bytes:
        return generate_latest(self.registry)
