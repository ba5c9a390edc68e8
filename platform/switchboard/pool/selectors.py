"""Endpoints for the framework-free pool in `inference/`: Django rows in, plain objects out."""

from __future__ import annotations

from inference import Endpoint, EngineStats
from switchboard.pool.models import InferenceEndpoint


def _endpoint(row: InferenceEndpoint) -> Endpoint:
    return Endpoint(
        name=row.name,
        url=row.url.rstrip("/"),
        model=row.model,
        weight=row.weight,
        max_concurrency=row.max_concurrency,
        draining=row.draining,
    )


def endpoint_list_enabled(*, model: str | None = None) -> list[Endpoint]:
    rows = InferenceEndpoint.objects.filter(enabled=True).order_by("name")
    if model is not None:
        rows = rows.filter(model=model)
    return [_endpoint(row) for row in rows]


def endpoint_list_with_stats() -> list[tuple[Endpoint, EngineStats | None]]:
    """Enabled endpoints (draining ones included) with their last health check."""
    result: list[tuple[Endpoint, EngineStats | None]] = []
    for row in InferenceEndpoint.objects.filter(enabled=True).order_by("name"):
        stats = None
        if row.healthy is not None:
            stats = EngineStats(
                healthy=row.healthy,
                running=row.running or 0.0,
                waiting=row.waiting or 0.0,
                kv_cache_usage=row.kv_cache_usage or 0.0,
                prefix_cache_hit_rate=row.prefix_cache_hit_rate,
                error=row.last_error,
            )
        result.append((_endpoint(row), stats))
    return result
