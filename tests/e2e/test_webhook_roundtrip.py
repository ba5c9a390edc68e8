"""One signed webhook message through real processes: web (live server), a Celery
worker process, a simulated vLLM endpoint process, and back to a signed callback."""

from __future__ import annotations

import json

import pytest
from standardwebhooks.webhooks import Webhook

from switchboard.conversations.models import Message
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TIMEOUT = 60


def test_signed_message_gets_a_signed_reply_with_usage(
    worker, endpoint, connector, receiver, post_webhook
):
    response = post_webhook(
        connector,
        {
            "message_id": "order-1",
            "user_id": "alice",
            "text": "Where is my order?",
            "conversation_id": "c-77",
        },
    )
    assert response.status_code == 202, response.text

    delivered = wait_until(receiver.accepted, timeout=TIMEOUT, what="the signed callback")
    callback = delivered[0]
    event = Webhook(connector.secret).verify(callback.body, callback.headers)
    data = event["data"]
    assert event["type"] == "message.reply"
    assert data["message_id"] == "order-1"
    assert data["conversation_id"] == "c-77"
    assert data["user_id"] == "alice"
    assert "simulated" in data["text"] and "Where is my order?" in data["text"]
    assert data["usage"]["prompt_tokens"] > 0 and data["usage"]["completion_tokens"] > 0

    inbound = Message.objects.get(direction="in", provider_message_id="order-1")
    reply = wait_until(
        lambda: Message.objects.filter(reply_to=inbound, status="delivered").first(),
        timeout=TIMEOUT,
        what="the reply to be marked delivered",
    )
    assert inbound.status == "replied"
    assert reply.text == data["text"]
    assert reply.prompt_tokens == data["usage"]["prompt_tokens"]
    assert reply.completion_tokens == data["usage"]["completion_tokens"]
    assert reply.endpoint_id == endpoint.pk
    assert reply.ttft_ms is not None and reply.latency_ms is not None
    assert 0 <= reply.ttft_ms <= reply.latency_ms
    assert callback.headers["webhook-id"] == f"msg_{reply.pk.hex}"


def test_provider_retry_yields_one_message_and_one_callback(
    worker, endpoint, connector, receiver, post_webhook
):
    payload = {"message_id": "dup-1", "user_id": "bob", "text": "hi"}
    first = post_webhook(connector, payload)
    wait_until(receiver.accepted, timeout=TIMEOUT, what="the first callback")
    second = post_webhook(connector, payload)
    assert first.status_code == second.status_code == 202
    assert second.json()["duplicate"] is True

    # Settle: the reply is delivered and nothing else is queued or in flight.
    wait_until(
        lambda: Message.objects.filter(direction="out", status="delivered").exists(),
        timeout=TIMEOUT,
        what="delivery to be recorded",
    )
    assert Message.objects.filter(direction="in").count() == 1
    assert Message.objects.filter(direction="out").count() == 1
    assert len(receiver.accepted()) == 1


def test_failing_receiver_gets_the_same_event_retried_until_it_accepts(
    worker, endpoint, connector, receiver, post_webhook
):
    receiver.fail_next = 2
    response = post_webhook(connector, {"message_id": "r-1", "user_id": "carol", "text": "yo"})
    assert response.status_code == 202

    accepted = wait_until(receiver.accepted, timeout=TIMEOUT, what="a successful retry")
    assert len(receiver.requests) == 3
    ids = {r.headers["webhook-id"] for r in receiver.requests}
    assert len(ids) == 1, "every retry must carry the same webhook-id"
    assert json.loads(accepted[0].body)["data"]["message_id"] == "r-1"
    reply = wait_until(
        lambda: Message.objects.filter(direction="out", status="delivered").first(),
        timeout=TIMEOUT,
        what="delivery to be recorded",
    )
    assert reply.attempts == 3


def test_history_of_the_conversation_reaches_the_prompt(
    worker, endpoint, connector, receiver, post_webhook
):
    for index, text in enumerate(["first question", "second question"]):
        response = post_webhook(
            connector, {"message_id": f"h-{index}", "user_id": "dave", "text": text}
        )
        assert response.status_code == 202
        wait_until(
            lambda n=index: len(receiver.accepted()) > n, timeout=TIMEOUT, what=f"reply {index}"
        )
    replies = list(Message.objects.filter(direction="out").order_by("created_at"))
    assert len(replies) == 2
    # The second prompt carried the first exchange, so it was longer.
    assert replies[1].prompt_tokens > replies[0].prompt_tokens + 5
    assert replies[0].conversation_id == replies[1].conversation_id


@pytest.mark.parametrize("state", ["queue entry lost", "worker died mid-claim"])
def test_sweeper_recovers_work_that_redis_forgot(worker, endpoint, connector, receiver, state):
    """PostgreSQL is the ledger: a message whose task vanished is still answered."""
    from datetime import timedelta

    from django.utils import timezone

    from connectors.base import InboundMessage
    from switchboard.conversations import services
    from switchboard.conversations.tasks import requeue_stalled_messages

    # Stored as the ingress would, but its enqueue never reached the broker.
    inbound = InboundMessage(
        channel="webhook",
        provider_message_id="lost-1",
        user_id="erin",
        conversation_key="user:erin",
        text="are you there?",
    )
    message = services.message_receive(connector=connector, inbound=inbound).message
    wait_until(receiver.accepted, timeout=TIMEOUT, what="the normal reply")
    # The worker logs the delivery after the receiver answered; let it finish first.
    wait_until(
        lambda: Message.objects.filter(direction="out", status="delivered").exists(),
        timeout=TIMEOUT,
        what="the normal reply to be recorded as delivered",
    )
    receiver.requests.clear()
    Message.objects.filter(direction="out").delete()
    long_ago = timezone.now() - timedelta(hours=1)
    status = "received" if state == "queue entry lost" else "processing"
    Message.objects.filter(pk=message.pk).update(
        status=status, created_at=long_ago, claimed_at=long_ago
    )

    counts = requeue_stalled_messages.apply().get()
    assert counts["generations"] == 1
    assert counts["released"] == (1 if status == "processing" else 0)

    delivered = wait_until(receiver.accepted, timeout=TIMEOUT, what="the recovered reply")
    assert json.loads(delivered[0].body)["data"]["message_id"] == "lost-1"
