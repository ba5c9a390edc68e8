from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from inference import Endpoint, EngineStats, HealthMonitor
from switchboard.pool.models import InferenceEndpoint
from switchboard.pool.selectors import endpoint_list_enabled


def endpoint_record_stats(*, endpoint: Endpoint, stats: EngineStats) -> None:
    InferenceEndpoint.objects.filter(name=endpoint.name).update(
        healthy=stats.healthy,
        running=stats.running,
        waiting=stats.waiting,
        kv_cache_usage=stats.kv_cache_usage,
        prefix_cache_hit_rate=stats.prefix_cache_hit_rate,
        last_error=stats.error[:2000],
        checked_at=timezone.now(),
    )


def pool_health_check() -> dict[str, bool]:
    """Probe every enabled endpoint once and store what it said."""
    monitor = HealthMonitor(
        endpoint_list_enabled,
        lambda endpoint, stats: endpoint_record_stats(endpoint=endpoint, stats=stats),
        timeout_s=settings.SWITCHBOARD_HEALTH_TIMEOUT_S,
    )
    try:
        return {endpoint.name: stats.healthy for endpoint, stats in monitor.poll_once()}
    finally:
        monitor.stop()


def endpoint_set_draining(*, endpoint: InferenceEndpoint, draining: bool) -> None:
    # Saved through the model, not a queryset update, so the audit log records who did it.
    endpoint.draining = draining
    endpoint.save(update_fields=["draining"])
