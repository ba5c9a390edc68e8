"""Conversations: search (end user, bot, dates, text), paging, transcripts, isolation."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

LIST = "/console/conversations/"


def detail(conversation: Any) -> str:
    return f"/console/conversations/{conversation.pk}/"


@pytest.fixture
def make_conversation(db: None) -> Any:
    """A conversation of `bot`'s webhook connector with `messages` (direction, text)."""
    from switchboard.bots.models import Connector
    from switchboard.bots.services import connector_create_webhook
    from switchboard.conversations.models import Conversation, EndUser, Message

    def make(
        bot: Any,
        user: str,
        messages: list[tuple[str, str]] = (),  # type: ignore[assignment]
        *,
        at: datetime | None = None,
        key: str | None = None,
    ) -> Any:
        connector = (
            Connector.objects.for_tenant(bot.tenant_id).filter(bot=bot, kind="webhook").first()
        ) or connector_create_webhook(bot=bot, name="Hook", callback_url="https://example.com/c")
        end_user, _ = EndUser.objects.get_or_create(
            tenant_id=bot.tenant_id, channel="webhook", external_id=user
        )
        conversation = Conversation.objects.create(
            tenant_id=bot.tenant_id,
            bot=bot,
            connector=connector,
            end_user=end_user,
            external_key=key or f"user:{user}:{Conversation.objects.count()}",
        )
        for direction, text in messages:
            Message.objects.create(
                tenant_id=bot.tenant_id,
                conversation=conversation,
                connector=connector,
                direction=direction,
                text=text,
                provider_message_id=uuid.uuid4().hex if direction == "in" else "",
                status="replied" if direction == "in" else "delivered",
            )
        if at is not None:
            Message.objects.filter(conversation=conversation).update(created_at=at)
            Conversation.objects.filter(pk=conversation.pk).update(last_message_at=at)
        return conversation

    return make


def listed(response: Any) -> set[int]:
    assert response.status_code == 200
    ids = re.findall(r'href="/console/conversations/(\d+)/"', response.content.decode())
    return {int(pk) for pk in ids}


def test_tenant_users_see_their_own_conversations_only(
    bot, make_conversation, viewer_of, other_tenant
):
    from switchboard.bots.services import bot_create

    mine = make_conversation(bot, "alice", [("in", "hello")])
    theirs = make_conversation(bot_create(tenant=other_tenant, name="X"), "eve", [("in", "hi")])

    client = viewer_of(bot.tenant)
    assert listed(client.get(LIST)) == {mine.pk}
    assert client.get(detail(mine)).status_code == 200
    # Another tenant's conversation does not exist, as far as this user can tell.
    assert client.get(detail(theirs)).status_code == 404


def test_operators_see_every_tenant_until_they_pick_one(
    bot, make_conversation, operator_client, other_tenant
):
    from switchboard.bots.services import bot_create

    mine = make_conversation(bot, "alice", [("in", "hello")])
    theirs = make_conversation(bot_create(tenant=other_tenant, name="X"), "eve", [("in", "hi")])
    response = operator_client.get(LIST)
    assert listed(response) == {mine.pk, theirs.pk}
    assert other_tenant.name.encode() in response.content  # a tenant column

    operator_client.post("/console/tenant/", {"tenant": str(bot.tenant.pk)})
    assert listed(operator_client.get(LIST)) == {mine.pk}


def test_search_by_end_user_bot_dates_and_text(bot, make_conversation, viewer_of):
    from switchboard.bots.services import bot_create

    other_bot = bot_create(tenant=bot.tenant, name="Billing")
    may = datetime(2026, 5, 10, 12, tzinfo=UTC)
    june = datetime(2026, 6, 20, 12, tzinfo=UTC)
    refund = make_conversation(bot, "alice-01", [("in", "I want a REFUND"), ("out", "ok")], at=may)
    order = make_conversation(bot, "bob", [("in", "where is my order")], at=june)
    billing = make_conversation(other_bot, "alice-02", [("in", "invoice please")], at=june)
    client = viewer_of(bot.tenant)

    assert listed(client.get(LIST, {"user": "alice"})) == {refund.pk, billing.pk}
    assert listed(client.get(LIST, {"bot": str(other_bot.pk)})) == {billing.pk}
    assert listed(client.get(LIST, {"q": "refund"})) == {refund.pk}  # any case
    assert listed(client.get(LIST, {"since": "2026-06-01"})) == {order.pk, billing.pk}
    assert listed(client.get(LIST, {"until": "2026-05-10"})) == {refund.pk}  # inclusive
    assert listed(
        client.get(LIST, {"since": "2026-06-01", "until": "2026-06-30", "q": "order"})
    ) == {order.pk}
    # The text and the dates must hold for the same message.
    assert listed(client.get(LIST, {"since": "2026-06-01", "q": "refund"})) == set()
    assert b"No conversation matches" in client.get(LIST, {"q": "nothing like it"}).content


def test_a_wrong_field_shows_its_error_and_the_others_still_filter(
    bot, make_conversation, viewer_of, other_tenant
):
    from switchboard.bots.services import bot_create

    alice = make_conversation(bot, "alice", [("in", "hi")])
    make_conversation(bot, "bob", [("in", "hi")])
    foreign_bot = bot_create(tenant=other_tenant, name="Foreign")
    client = viewer_of(bot.tenant)

    response = client.get(LIST, {"user": "alice", "since": "not a date"})
    assert listed(response) == {alice.pk}
    assert b"errorlist" in response.content
    # Another tenant's bot is not a choice.
    response = client.get(LIST, {"bot": str(foreign_bot.pk)})
    assert b"errorlist" in response.content
    assert b"Foreign" not in response.content
    response = client.get(LIST, {"since": "2026-06-02", "until": "2026-06-01"})
    assert b"before the start date" in response.content


def test_fifty_to_a_page_newest_activity_first(bot, make_conversation, viewer_of):
    from switchboard.conversations.models import Conversation

    made = [make_conversation(bot, f"user-{n}", [("in", "hi")]) for n in range(51)]
    for n, conversation in enumerate(made):
        Conversation.objects.filter(pk=conversation.pk).update(
            last_message_at=datetime(2026, 1, 1, 0, n, tzinfo=UTC)
        )
    client = viewer_of(bot.tenant)
    first = client.get(LIST)
    assert len(listed(first)) == 50 and made[0].pk not in listed(first)
    assert b"Page 1 of 2" in first.content
    assert listed(client.get(LIST, {"page": 2})) == {made[0].pk}
    # Paging keeps the search.
    assert b"?user=user&amp;page=2" in client.get(LIST, {"user": "user"}).content


def test_transcript_shows_status_usage_timings_endpoint_refusal_and_error(
    bot, make_conversation, viewer_of
):
    from switchboard.conversations.models import Message
    from switchboard.pool.models import InferenceEndpoint

    gpu = InferenceEndpoint.objects.create(name="gpu-node-7", url="http://10.0.0.7:8000")
    conversation = make_conversation(bot, "alice", [])
    common = {
        "tenant_id": bot.tenant_id,
        "conversation": conversation,
        "connector": conversation.connector,
    }
    question = Message.objects.create(
        **common,
        direction="in",
        text="What is the weather?",
        status="replied",
        provider_message_id="p-1",
    )
    Message.objects.create(
        **common,
        direction="out",
        text="Sunny all day.",
        status="delivered",
        reply_to=question,
        prompt_tokens=123,
        completion_tokens=45,
        ttft_ms=87.4,
        latency_ms=912.6,
        endpoint=gpu,
        finish_reason="stop",
    )
    Message.objects.create(
        **common,
        direction="in",
        text="Too many!",
        status="refused",
        refusal="rate_limited",
        provider_message_id="p-2",
    )
    Message.objects.create(
        **common,
        direction="in",
        text="Broken?",
        status="failed",
        error="pool unavailable",
        provider_message_id="p-3",
    )

    response = viewer_of(bot.tenant).get(detail(conversation))
    assert response.status_code == 200
    page = response.content.decode()
    for expected in (
        "What is the weather?",
        "Sunny all day.",
        "Delivered",
        "123",
        "45",
        "87 ms",
        "913 ms",
        "gpu-node-7",
        "rate_limited",
        "pool unavailable",
        "alice",
    ):
        assert expected in page, expected
    # Oldest first.
    assert page.index("What is the weather?") < page.index("Sunny all day.")


def test_the_test_chat_links_back_to_the_users_own_console_conversation(bot, make_console_user):
    from django.test import Client

    from connectors.base import InboundMessage
    from switchboard.console.consumers import console_connector, console_conversation_key
    from switchboard.conversations.services import message_receive

    user = make_console_user("admin", bot.tenant)
    inbound = InboundMessage(
        channel="console",
        provider_message_id="p-1",
        user_id=str(user.pk),
        conversation_key=console_conversation_key(user.pk, "abc"),
        text="testing",
    )
    message = message_receive(connector=console_connector(bot), inbound=inbound).message
    client = Client()
    client.force_login(user)

    listing = client.get(LIST, {"user": str(user.pk)})
    assert listed(listing) == {message.conversation_id}
    assert b"Console test chat" in listing.content
    page = client.get(f"/console/conversations/{message.conversation_id}/").content.decode()
    assert f"/console/chat/?bot={bot.pk}&amp;c=abc" in page


def test_sign_in_first(client):
    response = client.get(LIST)
    assert response.status_code == 302 and "/login/" in response["Location"]
