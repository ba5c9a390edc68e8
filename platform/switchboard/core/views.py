from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from switchboard import celery_app
from switchboard.pool.models import InferenceEndpoint


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "switchboard/home.html")


def healthz(request: HttpRequest) -> JsonResponse:
    """Process liveness only; readiness (database, Redis, pool) is a separate check."""
    return JsonResponse({"status": "ok"})


# --- readiness -----------------------------------------------------------------------
# Each check answers {"ok": bool, ...}. A failure names only the exception's type: the
# endpoint is unauthenticated, and driver messages can carry host names or credentials.


def _failed(exc: BaseException) -> dict[str, Any]:
    return {"ok": False, "error": type(exc).__name__}


def _check_database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"ok": True}


def _check_redis() -> dict[str, Any]:
    timeout = settings.SWITCHBOARD_READYZ_TIMEOUT_S
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=timeout, socket_timeout=timeout
    )
    try:
        client.ping()
    finally:
        client.close()
    return {"ok": True}


def _check_broker() -> dict[str, Any]:
    # Read from settings on every call rather than from the Celery app's loaded config,
    # so the check follows what this process is configured with.
    with celery_app.connection_for_write(
        url=settings.CELERY_BROKER_URL, connect_timeout=settings.SWITCHBOARD_READYZ_TIMEOUT_S
    ) as conn:
        # One attempt: a readiness probe answers now, it does not wait for the broker.
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0)
    return {"ok": True}


def _check_pool() -> dict[str, Any]:
    fresh_after = timezone.now() - timedelta(seconds=settings.SWITCHBOARD_READYZ_HEALTH_MAX_AGE_S)
    enabled = InferenceEndpoint.objects.filter(enabled=True)
    healthy = enabled.filter(draining=False, healthy=True, checked_at__gte=fresh_after).count()
    return {"ok": healthy > 0, "healthy": healthy, "enabled": enabled.count()}


READINESS_CHECKS: dict[str, Callable[[], dict[str, Any]]] = {
    "database": _check_database,
    "redis": _check_redis,
    "broker": _check_broker,
    "pool": _check_pool,
}


@require_safe
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Ready to serve: database, Redis, the Celery broker, and at least one inference
    endpoint that the health task found healthy recently. 200 when all pass, else 503
    naming the failures; every check is run and reported either way."""
    checks: dict[str, dict[str, Any]] = {}
    for name, check in READINESS_CHECKS.items():
        try:
            checks[name] = check()
        except Exception as exc:
            checks[name] = _failed(exc)
    failed = [name for name, result in checks.items() if not result["ok"]]
    body: dict[str, Any] = {"status": "unavailable" if failed else "ready", "checks": checks}
    if failed:
        body["failed"] = failed
    return JsonResponse(body, status=503 if failed else 200)
