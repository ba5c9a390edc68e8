"""/metrics: who may read it, and that its numbers follow real work.

Messages go through the real webhook ingress and services, against the real
PostgreSQL and Redis (broker included); transactions really commit, since counters
are written on commit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from langchain_core.messages import AIMessage

from tests.observability.conftest import TOKEN, Scrape

pytestmark = pytest.mark.django_db(transaction=True)


def _get(token: str | None = None, **extra: Any) -> Any:
    if token is not None:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return Client().get("/metrics", **extra)


# --- access -------------------------------------------------------------------------------


def test_without_the_token_a_scrape_is_refused_with_a_json_401(
    metrics_token: str,
) -> None:
    for response in (_get(), _get("wrong-token"), _get(f"{TOKEN}x")):
        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert response.json()["error"]["code"] == "unauthorized"
        assert b"switchboard_" not in response.content
    basic = Client().get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}")
    assert basic.status_code == 401
    assert _get(TOKEN).status_code == 200


def test_with_nothing_configured_metrics_are_off(settings: Any) -> None:
    settings.SWITCHBOARD_METRICS_TOKEN = ""
    settings.SWITCHBOARD_METRICS_ALLOWED_NETWORKS = []
    response = _get("anything")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "metrics_disabled"


def test_allowed_networks_alone_admit_their_addresses_only(settings: Any) -> None:
    settings.SWITCHBOARD_METRICS_TOKEN = ""
    settings.SWITCHBOARD_METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8", "::1"]
    assert _get(REMOTE_ADDR="10.1.2.3").status_code == 200
    assert _get(REMOTE_ADDR="::1").status_code == 200
    outside = _get(REMOTE_ADDR="192.0.2.7")
    assert outside.status_code == 403
    assert outside.json()["error"]["code"] == "forbidden"
    # A forwarded-for header names whoever the client likes: never trusted.
    spoofed = _get(REMOTE_ADDR="192.0.2.7", HTTP_X_FORWARDED_FOR="10.1.2.3")
    assert spoofed.status_code == 403


def test_token_and_networks_together_both_apply(settings: Any) -> None:
    settings.SWITCHBOARD_METRICS_TOKEN = TOKEN
    settings.SWITCHBOARD_METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert _get(TOKEN, REMOTE_ADDR="10.1.2.3").status_code == 200
    assert _get(TOKEN, REMOTE_ADDR="192.0.2.7").status_code == 403
    assert _get("wrong", REMOTE_ADDR="10.1.2.3").status_code == 401


def test_a_bad_network_setting_fails_the_system_check(settings: Any) -> None:
    from django.core import checks

    settings.SWITCHBOARD_METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8", "not-a-network"]
    errors = [m for m in checks.run_checks() if m.id == "observability.E001"]
    assert len(errors) == 1 and "not-a-network" in errors[0].msg


def test_only_get_is_allowed(metrics_token: str) -> None:
    response = Client().post("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


# --- what is served ---------------------------------------------------------------------


PLATFORM_FAMILIES = {
    "switchboard_messages_received",
    "switchboard_inference_requests",
    "switchboard_tokens",
    "switchboard_deliveries",
    "switchboard_admission_refusals",
    "switchboard_inference_ttft_seconds",
    "switchboard_inference_latency_seconds",
    "switchboard_bot_info",
    "switchboard_queue_length",
    "switchboard_queue_unacked",
    "switchboard_messages_open",
    "switchboard_mau",
    "switchboard_mau_over_limit",
    "switchboard_model_mau",
    "switchboard_pool_endpoint_enabled",
    "switchboard_pool_endpoint_healthy",
    "switchboard_pool_endpoint_circuit_workers",
    "switchboard_metrics_source_up",
}


def test_scopes_split_process_and_platform_metrics(
    scrape: Callable[..., Scrape],
) -> None:
    Client().get("/healthz")  # at least one request through the HTTP middleware
    everything = scrape()
    platform = scrape("platform")
    process = scrape("process")
    assert set(everything.families) >= PLATFORM_FAMILIES
    assert set(platform.families) >= PLATFORM_FAMILIES
    assert not PLATFORM_FAMILIES & set(process.families)
    http = "django_http_responses_total_by_status_view_method"
    assert http in process.families and http in everything.families
    assert http not in platform.families
    assert process.value(f"{http}_total", view="healthz", status="200", method="GET") >= 1
    assert platform.value("switchboard_metrics_source_up", source="redis") == 1
    assert platform.value("switchboard_metrics_source_up", source="database") == 1
    bad = Client().get("/metrics", {"scope": "nope"}, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert bad.status_code == 400


def test_messages_tokens_queues_and_deliveries_follow_real_work(
    scrape: Callable[..., Scrape],
    send_webhook: Callable[..., Any],
    tenant: Any,
    bot: Any,
    connector: Any,
    purge_queues: None,
) -> None:
    from switchboard.conversations import delivery, services
    from switchboard.conversations.models import Message

    labels = {"tenant": tenant.slug, "bot": str(bot.pk), "connector_kind": "webhook"}
    before = scrape()
    assert before.value("switchboard_messages_received_total", **labels) == 0
    assert before.value("switchboard_queue_length", queue="chat") == 0

    assert send_webhook(connector, "alice", "where is my order?").status_code == 202

    after_ingress = scrape()
    accepted = {**labels, "outcome": "accepted"}
    assert after_ingress.value("switchboard_messages_received_total", **accepted) == 1
    # No worker runs here: the generation task waits on the broker.
    assert after_ingress.value("switchboard_queue_length", queue="chat") == 1
    assert after_ingress.value("switchboard_messages_open", status="received") == 1
    assert after_ingress.value("switchboard_mau", tenant=tenant.slug) == 1
    assert after_ingress.value("switchboard_bot_info", bot=str(bot.pk), bot_name=bot.name) == 1

    inbound = Message.objects.select_related("conversation__bot", "connector").get(direction="in")
    reply = services.reply_record(
        inbound=inbound,
        reply=AIMessage(
            content="It ships tomorrow.",
            response_metadata={
                "token_usage": {"prompt_tokens": 12, "completion_tokens": 5},
                "endpoint": "gpu-1",
                "ttft_ms": 180.0,
                "latency_ms": 900.0,
                "finish_reason": "stop",
            },
        ),
    )

    after_reply = scrape()
    assert after_reply.value("switchboard_inference_requests_total", **labels, outcome="ok") == 1
    assert after_reply.value("switchboard_tokens_total", **labels, type="prompt") == 12
    assert after_reply.value("switchboard_tokens_total", **labels, type="completion") == 5
    ttft = "switchboard_inference_ttft_seconds"
    assert after_reply.value(f"{ttft}_count", endpoint="gpu-1") == 1
    assert after_reply.value(f"{ttft}_sum", endpoint="gpu-1") == pytest.approx(0.18)
    assert after_reply.value(f"{ttft}_bucket", endpoint="gpu-1", le="0.1") == 0
    assert after_reply.value(f"{ttft}_bucket", endpoint="gpu-1", le="0.25") == 1
    assert after_reply.value(f"{ttft}_bucket", endpoint="gpu-1", le="+Inf") == 1
    latency = "switchboard_inference_latency_seconds"
    assert after_reply.value(f"{latency}_bucket", endpoint="gpu-1", le="0.5") == 0
    assert after_reply.value(f"{latency}_bucket", endpoint="gpu-1", le="1.0") == 1
    # The delivery task waits on the broker, the reply in PostgreSQL.
    assert after_reply.value("switchboard_queue_length", queue="default") == 1
    assert after_reply.value("switchboard_messages_open", status="received") == 0
    assert after_reply.value("switchboard_messages_open", status="pending") == 1

    delivery.reply_deliver(message_id=str(reply.pk))

    after_delivery = scrape()
    assert after_delivery.value("switchboard_deliveries_total", **labels, outcome="delivered") == 1
    assert after_delivery.value("switchboard_messages_open", status="pending") == 0
    # Counters only grow: the earlier ones are all still there.
    assert after_delivery.value("switchboard_tokens_total", **labels, type="prompt") == 12
    assert after_delivery.value("switchboard_messages_received_total", **accepted) == 1


def test_refusals_are_counted_by_reason_whether_stored_or_answered_429(
    scrape: Callable[..., Scrape],
    send_webhook: Callable[..., Any],
    licence_for: Callable[..., Any],
    tenant: Any,
    bot: Any,
    connector: Any,
    purge_queues: None,
) -> None:
    from switchboard.conversations.models import Message

    licence_for(tenant, mau_limit=1, user_messages_per_minute=1, enforcement="hard")
    assert send_webhook(connector, "alice").status_code == 202
    # Alice again, too soon: 429 and nothing stored.
    assert send_webhook(connector, "alice").status_code == 429
    # Bob would be a second monthly user: refused, stored, answered with the refusal.
    assert send_webhook(connector, "bob").status_code == 202
    assert Message.objects.filter(direction="in", status="refused").count() == 1

    now = scrape()
    refusals = {"tenant": tenant.slug, "connector_kind": "webhook"}
    assert now.value("switchboard_admission_refusals_total", **refusals, reason="rate_limited") == 1
    assert now.value("switchboard_admission_refusals_total", **refusals, reason="mau_limit") == 1
    labels = {"tenant": tenant.slug, "bot": str(bot.pk), "connector_kind": "webhook"}
    received = "switchboard_messages_received_total"
    assert now.value(received, **labels, outcome="accepted") == 1
    assert now.value(received, **labels, outcome="refused") == 1
    assert now.value("switchboard_mau", tenant=tenant.slug) == 1


def test_a_message_rolled_back_is_not_counted(
    scrape: Callable[..., Scrape], tenant: Any, bot: Any, connector: Any
) -> None:
    from django.db import transaction

    from connectors.base import InboundMessage
    from switchboard.conversations.services import message_receive

    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        message_receive(
            connector=connector,
            inbound=InboundMessage(
                channel="webhook",
                provider_message_id="rolled-back",
                user_id="carol",
                conversation_key="c",
                text="hi",
            ),
        )
        raise Abort

    assert scrape().value("switchboard_messages_received_total", tenant=tenant.slug) == 0


def test_pool_endpoints_show_health_draining_and_circuits(
    scrape: Callable[..., Scrape], redis_client: Any
) -> None:
    import time

    from django.utils import timezone

    from switchboard.pool.models import InferenceEndpoint
    from switchboard.pool.runtime import BREAKERS_KEY

    InferenceEndpoint.objects.create(
        name="gpu-a",
        url="http://127.0.0.1:9/a",
        healthy=True,
        running=3,
        waiting=1,
        kv_cache_usage=0.42,
        checked_at=timezone.now(),
    )
    InferenceEndpoint.objects.create(
        name="gpu-b", url="http://127.0.0.1:9/b", draining=True, healthy=False
    )
    InferenceEndpoint.objects.create(name="gpu-new", url="http://127.0.0.1:9/c")
    now = int(time.time())
    redis_client.hset(
        f"{BREAKERS_KEY}:gpu-b", mapping={"w1:1": f"open|{now}", "w2:2": f"open|{now}"}
    )
    redis_client.hset(f"{BREAKERS_KEY}:gpu-a", mapping={"w1:1": f"closed|{now}"})
    try:
        got = scrape("platform")
    finally:
        redis_client.delete(f"{BREAKERS_KEY}:gpu-a", f"{BREAKERS_KEY}:gpu-b")

    pool = "switchboard_pool_endpoint"
    assert got.value(f"{pool}_healthy", endpoint="gpu-a") == 1
    assert got.value(f"{pool}_healthy", endpoint="gpu-b") == 0
    # Never checked: no verdict rather than a false "unhealthy".
    assert not [
        s for s in got.families[f"{pool}_healthy"].samples if s.labels["endpoint"] == "gpu-new"
    ]
    assert got.value(f"{pool}_draining", endpoint="gpu-b") == 1
    assert got.value(f"{pool}_draining", endpoint="gpu-a") == 0
    assert got.value(f"{pool}_enabled", endpoint="gpu-new") == 1
    assert got.value(f"{pool}_requests_running", endpoint="gpu-a") == 3
    assert got.value(f"{pool}_kv_cache_usage_ratio", endpoint="gpu-a") == pytest.approx(0.42)
    assert got.value(f"{pool}_circuit_workers", endpoint="gpu-b", state="open") == 2
    assert got.value(f"{pool}_circuit_workers", endpoint="gpu-b", state="closed") == 0
    assert got.value(f"{pool}_circuit_workers", endpoint="gpu-a", state="closed") == 1


def test_with_redis_down_database_metrics_still_come_and_say_so(
    scrape: Callable[..., Scrape],
    settings: Any,
    tenant: Any,
    connector: Any,
    send_webhook: Any,
) -> None:
    from switchboard.observability import counters

    assert send_webhook(connector, "dave").status_code == 202
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    counters.client.cache_clear()
    try:
        got = scrape("platform")
    finally:
        counters.client.cache_clear()
    assert got.value("switchboard_metrics_source_up", source="redis") == 0
    assert got.value("switchboard_metrics_source_up", source="database") == 1
    assert got.value("switchboard_mau", tenant=tenant.slug) == 1
    assert "switchboard_messages_received" not in got.families
