"""/readyz against the real PostgreSQL and Redis; each dependency made to fail for real
(a closed port), not mocked."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.utils import timezone

from switchboard.pool.models import InferenceEndpoint
from tests.support.processes import free_port


def _endpoint(name: str = "gpu-1", **fields: Any) -> InferenceEndpoint:
    values: dict[str, Any] = {
        "url": f"http://{name}.pool.internal:8000",
        "healthy": True,
        "checked_at": timezone.now(),
    }
    values.update(fields)
    return InferenceEndpoint.objects.create(name=name, **values)


def _ready(client: Client) -> tuple[int, dict[str, Any]]:
    response = client.get("/readyz")
    assert response["Content-Type"] == "application/json"
    assert "no-store" in response["Cache-Control"]
    return response.status_code, response.json()


@pytest.mark.django_db
def test_ready_when_every_dependency_answers(client: Client) -> None:
    _endpoint()
    _endpoint("gpu-2", healthy=False)
    status, body = _ready(client)
    assert status == 200
    assert body["status"] == "ready"
    assert "failed" not in body
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["redis"] == {"ok": True}
    assert body["checks"]["broker"] == {"ok": True}
    assert body["checks"]["pool"] == {"ok": True, "healthy": 1, "enabled": 2}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "fields",
    [
        {},  # no endpoint at all
        {"healthy": False},
        {"healthy": None, "checked_at": None},  # never checked
        {"draining": True},
        {"enabled": False},
        {"checked_at": "stale"},  # the health task stopped reporting
    ],
    ids=["none", "unhealthy", "never-checked", "draining", "disabled", "stale"],
)
def test_not_ready_without_a_healthy_endpoint(
    client: Client, settings: Any, fields: dict[str, Any]
) -> None:
    if fields:
        if fields.get("checked_at") == "stale":
            age = settings.SWITCHBOARD_READYZ_HEALTH_MAX_AGE_S + 60
            fields = {"checked_at": timezone.now() - timedelta(seconds=age)}
        _endpoint(**fields)
    status, body = _ready(client)
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["failed"] == ["pool"]
    assert body["checks"]["pool"]["ok"] is False
    assert body["checks"]["pool"]["healthy"] == 0


@pytest.mark.django_db
def test_redis_down_is_reported_without_its_address(client: Client) -> None:
    _endpoint()
    port = free_port()  # nothing listens there
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{port}/0"):
        status, body = _ready(client)
    assert status == 503
    assert body["failed"] == ["redis"]
    assert body["checks"]["redis"] == {"ok": False, "error": "ConnectionError"}
    assert str(port) not in str(body)


@pytest.mark.django_db
def test_broker_down_is_reported(client: Client) -> None:
    _endpoint()
    port = free_port()
    with override_settings(CELERY_BROKER_URL=f"redis://127.0.0.1:{port}/0"):
        status, body = _ready(client)
    assert status == 503
    assert body["failed"] == ["broker"]
    assert body["checks"]["broker"]["ok"] is False
    assert str(port) not in str(body)


@pytest.mark.django_db(transaction=True)
def test_database_down_is_reported(client: Client) -> None:
    _endpoint()
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict["HOST"] = "127.0.0.1"
    connection.settings_dict["PORT"] = str(free_port())
    try:
        status, body = _ready(client)
    finally:
        connection.close()
        connection.settings_dict.update(saved)
    assert status == 503
    # The pool's state lives in the database too, so it cannot be known either.
    assert body["failed"] == ["database", "pool"]
    assert body["checks"]["database"] == {"ok": False, "error": "OperationalError"}
    assert body["checks"]["redis"]["ok"] is True


@pytest.mark.django_db
def test_only_get_and_head(client: Client) -> None:
    assert client.post("/readyz").status_code == 405
    assert client.head("/readyz").status_code in (200, 503)
