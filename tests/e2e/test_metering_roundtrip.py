"""Metering through real processes: a webhook message answered by a Celery worker via a
simulated vLLM endpoint leaves one usage record, counts its user once, and a MAU
threshold alert reaches the tenant's alert webhook, signed."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from connectors.webhook import generate_secret
from switchboard.conversations.models import Message
from switchboard.metering.models import Alert, MauCounter, UsageRecord
from tests.support.receiver import CallbackReceiver
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TIMEOUT = 60


def _replies_settled(count: int) -> None:
    """The worker is done with every reply: nothing of it may race the test's teardown
    (the database flush)."""
    wait_until(
        lambda: Message.objects.filter(direction="out", status="delivered").count() >= count,
        timeout=TIMEOUT,
        what=f"{count} replies marked delivered",
    )


def test_answered_message_leaves_one_usage_record_and_one_mau(
    worker: None,
    endpoint: Any,
    tenant: Any,
    connector: Any,
    receiver: CallbackReceiver,
    post_webhook: Callable[..., Any],
    licence_for: Callable[..., Any],
) -> None:
    licence_for(tenant, mau_limit=10)
    for n in range(2):
        body = {"message_id": f"m-{n}", "user_id": "alice", "text": f"question {n}"}
        assert post_webhook(connector, body).status_code == 202
    wait_until(lambda: len(receiver.accepted()) >= 2, timeout=TIMEOUT, what="both replies")
    _replies_settled(2)
    records = list(UsageRecord.objects.filter(tenant=tenant).order_by("id"))
    assert len(records) == 2
    for record in records:
        reply = Message.objects.get(reply_to_id=record.message_id)
        assert record.outcome == "ok"
        assert record.endpoint == endpoint.name
        assert record.model_name == connector.bot.model_name
        assert (record.prompt_tokens, record.completion_tokens) == (
            reply.prompt_tokens,
            reply.completion_tokens,
        )
        assert record.prompt_tokens > 0 and record.ttft_ms is not None
        assert record.end_user_id == reply.conversation.end_user_id
    assert MauCounter.objects.get(tenant=tenant).active == 1


def test_mau_alert_reaches_the_tenants_alert_webhook_signed(
    worker: None,
    endpoint: Any,
    tenant: Any,
    connector: Any,
    post_webhook: Callable[..., Any],
    licence_for: Callable[..., Any],
) -> None:
    secret = generate_secret()
    with CallbackReceiver() as alerts:
        tenant.alert_webhook_url = alerts.url
        tenant.alert_webhook_secret = secret
        tenant.save()
        licence_for(tenant, mau_limit=2)
        body = {"message_id": "m-1", "user_id": "alice", "text": "hi"}
        assert post_webhook(connector, body).status_code == 202
        # 1 of 2 is 50 %: nothing yet. The second user is 100 % and crosses all three.
        body = {"message_id": "m-2", "user_id": "bob", "text": "hi"}
        assert post_webhook(connector, body).status_code == 202
        sent = wait_until(
            lambda: alerts.accepted() if len(alerts.accepted()) >= 3 else None,
            timeout=TIMEOUT,
            what="three alert webhooks",
        )
        events = [Webhook(secret).verify(r.body, r.headers) for r in sent]
        assert sorted(e["threshold_percent"] for e in events) == [80, 90, 100]
        assert all(e["type"] == "alert.mau_threshold" for e in events)
        assert {(e["value"], e["limit"]) for e in events} == {(2, 2)}
        assert json.loads(sent[0].body)["tenant"] == str(tenant.pk)
        wait_until(
            lambda: Alert.objects.filter(tenant=tenant, delivered_at__isnull=False).count() == 3,
            timeout=TIMEOUT,
            what="alerts marked delivered",
        )
        _replies_settled(2)
