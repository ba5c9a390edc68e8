"""Generation outcomes that need no worker: claiming, failure bookkeeping, history."""

from __future__ import annotations

import pytest

from connectors.base import InboundMessage
from inference import PoolUnavailable
from switchboard.conversations import selectors, services
from switchboard.conversations.models import Message

pytestmark = pytest.mark.django_db(transaction=True)


def _receive(connector, provider_id="m-1", text="hi", user="u-1"):
    inbound = InboundMessage(
        channel="webhook",
        provider_message_id=provider_id,
        user_id=user,
        conversation_key=f"user:{user}",
        text=text,
    )
    return services.message_receive(connector=connector, inbound=inbound).message


def test_without_endpoints_the_message_goes_back_to_received_with_the_error(connector):
    message = _receive(connector)
    with pytest.raises(PoolUnavailable):
        services.message_generate_reply(message_id=str(message.pk))
    message.refresh_from_db()
    assert message.status == "received"
    assert message.attempts == 1
    assert message.error
    assert not Message.objects.filter(direction="out").exists()


def test_a_claimed_message_cannot_be_claimed_again(connector):
    message = _receive(connector)
    assert services.message_claim(message_id=str(message.pk)) is not None
    assert services.message_claim(message_id=str(message.pk)) is None


def test_failing_for_good_marks_the_message_failed(connector):
    message = _receive(connector)
    services.message_fail(message_id=str(message.pk), error="context too long")
    message.refresh_from_db()
    assert (message.status, message.error) == ("failed", "context too long")


def test_history_is_bounded_by_the_window_and_skips_unanswered_messages(connector):
    first = _receive(connector, "m-1", "one")
    Message.objects.filter(pk=first.pk).update(status="replied")
    Message.objects.create(
        tenant=connector.tenant,
        conversation=first.conversation,
        connector=connector,
        direction="out",
        text="reply one",
        status="delivered",
        reply_to=first,
    )
    failed = _receive(connector, "m-2", "two")
    Message.objects.filter(pk=failed.pk).update(status="failed")
    current = _receive(connector, "m-3", "three")

    assert selectors.conversation_history(message=current, limit=10) == [
        ("in", "one"),
        ("out", "reply one"),
    ]
    assert selectors.conversation_history(message=current, limit=1) == [("out", "reply one")]
    assert selectors.conversation_history(message=current, limit=0) == []


def test_one_end_user_and_conversation_per_identity(connector):
    a = _receive(connector, "m-1", user="same")
    b = _receive(connector, "m-2", user="same")
    c = _receive(connector, "m-3", user="other")
    assert a.conversation_id == b.conversation_id != c.conversation_id
    assert a.conversation.end_user_id == b.conversation.end_user_id
