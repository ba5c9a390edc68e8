"""The Django side of the GPU pool: endpoints from the database, health stored for the
admin, drain and per-bot strategies reaching the framework-free pool."""

from __future__ import annotations

import pytest
from django.urls import reverse

from inference import ChatRequest, Endpoint, RouteContext
from switchboard.pool import services
from switchboard.pool.models import InferenceEndpoint
from switchboard.pool.runtime import worker_pool
from tests.support.processes import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def endpoints(simulator_url):
    live = InferenceEndpoint.objects.create(name="live", url=simulator_url)
    dead = InferenceEndpoint.objects.create(name="dead", url=f"http://127.0.0.1:{free_port()}")
    return live, dead


def test_health_check_stores_each_endpoints_state(endpoints):
    live, dead = endpoints
    assert services.pool_health_check() == {"live": True, "dead": False}
    live.refresh_from_db()
    dead.refresh_from_db()
    assert live.healthy is True and live.checked_at is not None
    assert live.running is not None and live.kv_cache_usage is not None
    assert dead.healthy is False and "Connect" in dead.last_error


def test_worker_pool_skips_endpoints_the_health_check_found_down(endpoints):
    live, _ = endpoints
    services.pool_health_check()
    request = ChatRequest(
        model=live.model, messages=[{"role": "user", "content": "hi"}], max_tokens=8, temperature=0
    )
    ranked = worker_pool().candidates(request, RouteContext(affinity_key="c-1"))
    assert [e.name for e in ranked] == ["live"]


def test_draining_and_disabled_endpoints_take_no_new_requests(endpoints):
    live, dead = endpoints
    live.draining = True
    live.save()
    dead.enabled = False
    dead.save()
    pool = worker_pool()
    assert [e.name for e in pool.endpoints()] == ["live"]  # tracked while it drains
    request = ChatRequest(
        model=live.model, messages=[{"role": "user", "content": "hi"}], max_tokens=8, temperature=0
    )
    assert pool.candidates(request, RouteContext()) == []


def test_endpoint_rows_become_plain_endpoints_with_routing_settings(simulator_url):
    InferenceEndpoint.objects.create(
        name="big", url=simulator_url + "/", weight=2.5, max_concurrency=7
    )
    (endpoint,) = worker_pool().endpoints()
    assert endpoint == Endpoint(
        name="big",
        url=simulator_url,
        model="Qwen/Qwen-7B-Chat",
        weight=2.5,
        max_concurrency=7,
        draining=False,
    )


def test_admin_drain_action_and_health_columns(admin_client, endpoints):
    live, _ = endpoints
    url = reverse("admin:pool_inferenceendpoint_changelist")
    response = admin_client.post(
        url, {"action": "drain", "_selected_action": [live.pk]}, follow=True
    )
    assert response.status_code == 200
    live.refresh_from_db()
    assert live.draining is True
    response = admin_client.post(
        url, {"action": "check_health", "_selected_action": [live.pk]}, follow=True
    )
    assert "unhealthy: dead" in response.content.decode().lower()
