"""Test chat: the page, the WebSocket consumer (against the real Redis channel layer),
and the pipeline's console kind (admission without MAU, in-app delivery, live tokens)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from connectors.base import InboundMessage

URL = "/console/chat/"
WS_PATH = "/ws/console/chat/"
QUEUES = ("realtime", "chat", "default")


@pytest.fixture
def _no_leftover_tasks(redis_client: Any) -> Iterator[None]:
    # Committed console messages enqueue their generation; no worker runs here.
    yield
    redis_client.delete(*QUEUES)


def _socket(user: Any | None, *, tenant: Any = None, origin: bytes = b"http://localhost"):
    """A communicator for the real ASGI app, signed in as `user` through its session."""
    from switchboard.asgi import application
    from switchboard.console.access import TENANT_SESSION_KEY

    headers = [(b"origin", origin)]
    if user is not None:
        client = Client()
        client.force_login(user)
        if tenant is not None:
            session = client.session
            session[TENANT_SESSION_KEY] = str(tenant.pk)
            session.save()
        cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    return WebsocketCommunicator(application, WS_PATH, headers=headers)


def _connects(communicator: WebsocketCommunicator) -> bool:
    async def attempt() -> bool:
        connected, _ = await communicator.connect()
        await communicator.disconnect()
        return connected

    return async_to_sync(attempt)()


# --- the page -----------------------------------------------------------------------


def test_admin_sees_the_tenants_active_bots_only(bot, admin_of, other_tenant):
    from switchboard.bots.services import bot_create

    bot_create(tenant=other_tenant, name="Not yours")
    retired = bot_create(tenant=bot.tenant, name="Retired")
    retired.is_active = False
    retired.save()

    response = admin_of(bot.tenant).get(URL)
    assert response.status_code == 200
    page = response.content.decode()
    assert f'data-bot="{bot.pk}"' in page
    assert "Not yours" not in page and "Retired" not in page
    assert "console/chat.js" in page


def test_viewers_may_not_chat(tenant, viewer_of):
    assert viewer_of(tenant).get(URL).status_code == 403


def test_operator_picks_a_tenant_first(bot, operator_client):
    response = operator_client.get(URL)
    assert response.status_code == 200
    assert b"Pick a tenant" in response.content
    assert b"chat.js" not in response.content


def test_another_tenants_bot_is_not_found(tenant, admin_of, other_tenant):
    from switchboard.bots.services import bot_create

    foreign = bot_create(tenant=other_tenant, name="Foreign")
    client = admin_of(tenant)
    assert client.get(URL, {"bot": str(foreign.pk)}).status_code == 404
    assert client.get(URL, {"bot": "not-a-uuid"}).status_code == 404


def test_the_page_shows_the_conversation_so_far(bot, make_console_user):
    from switchboard.console.consumers import console_connector, console_conversation_key
    from switchboard.conversations.services import message_receive

    user = make_console_user("admin", bot.tenant)
    inbound = InboundMessage(
        channel="console",
        provider_message_id="p-1",
        user_id=str(user.pk),
        conversation_key=console_conversation_key(user.pk, "t1"),
        text="earlier question",
    )
    message_receive(connector=console_connector(bot), inbound=inbound)
    client = Client()
    client.force_login(user)

    assert b"earlier question" in client.get(URL, {"bot": str(bot.pk), "c": "t1"}).content
    # Another conversation token starts afresh.
    assert b"earlier question" not in client.get(URL, {"bot": str(bot.pk), "c": "t2"}).content


# --- the pipeline's console kind ------------------------------------------------------


def _console_inbound(user_id: str, text: str = "hello") -> InboundMessage:
    return InboundMessage(
        channel="console",
        provider_message_id=uuid.uuid4().hex,
        user_id=user_id,
        conversation_key=f"console:{user_id}:main",
        text=text,
    )


@pytest.mark.django_db
def test_console_users_are_not_counted_in_mau_nor_refused_for_their_kind(bot, licence_for):
    """A tenant at its MAU cap, licensed for webhooks only, can still test its bots."""
    from switchboard.bots.services import connector_create_webhook
    from switchboard.console.consumers import console_connector
    from switchboard.conversations.models import EndUser
    from switchboard.conversations.services import message_receive
    from switchboard.licensing.services import limits_cache_clear
    from switchboard.metering.models import MauCounter, ModelActiveUser, MonthlyActiveUser

    licence_for(bot.tenant, mau_limit=0, connector_kinds=["webhook"])
    try:
        console = console_connector(bot)
        message = message_receive(connector=console, inbound=_console_inbound("7")).message
        assert (message.status, message.refusal) == ("received", "")
        end_user = EndUser.objects.get(channel="console", external_id="7")
        assert end_user.counted_month is None
        assert not MonthlyActiveUser.objects.filter(end_user=end_user).exists()
        assert not ModelActiveUser.objects.filter(end_user=end_user).exists()
        assert not MauCounter.objects.filter(tenant=bot.tenant, active__gt=0).exists()

        # The same tenant's real end users are held to the cap.
        webhook = connector_create_webhook(bot=bot, name="Orders")
        outsider = InboundMessage(
            channel="webhook",
            provider_message_id="w-1",
            user_id="alice",
            conversation_key="c",
            text="hi",
        )
        refused = message_receive(connector=webhook, inbound=outsider).message
        assert (refused.status, refused.refusal) == ("refused", "mau_limit")
    finally:
        limits_cache_clear()


@pytest.mark.django_db
def test_a_console_reply_is_delivered_in_app(bot):
    from switchboard.console.consumers import console_connector
    from switchboard.conversations import delivery
    from switchboard.conversations.models import DeliveryAttempt, Message
    from switchboard.conversations.services import message_receive

    connector = console_connector(bot)
    assert console_connector(bot) == connector  # one per bot
    inbound = message_receive(connector=connector, inbound=_console_inbound("8")).message
    reply = Message.objects.create(
        tenant=bot.tenant,
        conversation=inbound.conversation,
        connector=connector,
        direction="out",
        text="hi there",
        status="pending",
        reply_to=inbound,
    )
    outcome = delivery.reply_deliver(message_id=str(reply.pk))
    reply.refresh_from_db()
    assert outcome.delivered and reply.status == "delivered" and reply.delivered_at
    # Nothing was sent anywhere, so nothing belongs in the delivery log.
    assert not DeliveryAttempt.objects.exists()


def test_the_console_connector_has_no_ingress(bot, client):
    from switchboard.console.consumers import console_connector

    connector = console_connector(bot)
    for kind in ("webhook", "dingtalk"):
        response = client.post(
            f"/hooks/{kind}/{connector.pk}/", data="{}", content_type="application/json"
        )
        assert response.status_code == 404, (kind, response.content)


# --- the consumer -------------------------------------------------------------------

consumer_db = pytest.mark.django_db(transaction=True)


@consumer_db
def test_sockets_need_a_console_user_who_may_chat(tenant, make_console_user):
    assert not _connects(_socket(None))
    assert not _connects(_socket(make_console_user("viewer", tenant)))
    assert _connects(_socket(make_console_user("admin", tenant)))
    operator = make_console_user("operator")
    assert not _connects(_socket(operator))  # no tenant picked
    assert _connects(_socket(operator, tenant=tenant))


@consumer_db
def test_a_foreign_origin_is_refused(tenant, make_console_user):
    admin = make_console_user("admin", tenant)
    assert not _connects(_socket(admin, origin=b"https://evil.example"))


@consumer_db
def test_another_tenants_bot_is_refused_and_nothing_is_stored(
    tenant, make_console_user, other_tenant
):
    from switchboard.bots.models import Connector
    from switchboard.bots.services import bot_create
    from switchboard.conversations.models import Message

    foreign = bot_create(tenant=other_tenant, name="Foreign")
    communicator = _socket(make_console_user("admin", tenant))

    async def talk() -> list[dict[str, Any]]:
        connected, _ = await communicator.connect()
        assert connected
        answers = []
        for frame in (
            {"bot": str(foreign.pk), "text": "let me in"},
            {"bot": "nonsense", "text": "hi"},
            {"bot": str(foreign.pk), "text": "   "},
            {"bot": str(foreign.pk), "text": "x" * 4001},
            {"bot": str(foreign.pk), "text": "hi", "conversation": "../etc"},
            "not an object",
        ):
            await communicator.send_json_to(frame)
            answers.append(await communicator.receive_json_from(timeout=5))
        await communicator.send_to(text_data="{not json")
        answers.append(await communicator.receive_json_from(timeout=5))
        await communicator.disconnect()
        return answers

    answers = async_to_sync(talk)()
    assert {a["type"] for a in answers} == {"error"}
    assert [a["code"] for a in answers] == [
        "not_found",
        "not_found",
        "empty",
        "too_long",
        "bad_request",
        "bad_request",
        "bad_request",
    ]
    assert not Message.objects.exists()
    assert not Connector.objects.filter(kind="console").exists()


@consumer_db
def test_a_message_is_stored_and_published_tokens_reach_the_socket(
    bot, make_console_user, _no_leftover_tasks
):
    from switchboard.conversations.models import Message
    from switchboard.conversations.services import _LiveReply

    admin = make_console_user("admin", bot.tenant)
    communicator = _socket(admin)

    def publish(message_id: str) -> None:
        # As the worker does, from a thread of its own (no event loop there).
        live = _LiveReply(uuid.UUID(message_id))
        for token in ("Hel", "lo", "!"):
            live.send("delta", text=token)
        live.send("done", reply="r-1", text="Hello!", prompt_tokens=3, completion_tokens=3)

    async def talk() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        connected, _ = await communicator.connect()
        assert connected
        await communicator.send_json_to({"bot": str(bot.pk), "text": "Say hello"})
        accepted = await communicator.receive_json_from(timeout=5)
        worker = threading.Thread(target=publish, args=(accepted["message"],))
        worker.start()
        events = []
        while not events or events[-1]["type"] != "done":
            events.append(await communicator.receive_json_from(timeout=5))
        worker.join()
        await communicator.disconnect()
        return accepted, events

    accepted, events = async_to_sync(talk)()
    assert accepted["type"] == "accepted"
    inbound = Message.objects.select_related("connector", "conversation__end_user").get(
        pk=accepted["message"]
    )
    assert inbound.text == "Say hello" and inbound.status == "received"
    assert inbound.connector.kind == "console" and inbound.connector.bot_id == bot.pk
    end_user = inbound.conversation.end_user
    assert (end_user.channel, end_user.external_id) == ("console", str(admin.pk))
    assert accepted["conversation"] == inbound.conversation_id

    deltas = [e for e in events if e["type"] == "delta"]
    assert [d["text"] for d in deltas] == ["Hel", "lo", "!"]
    assert all(d["message"] == accepted["message"] for d in deltas)
    assert events[-1]["text"] == "Hello!" and events[-1]["completion_tokens"] == 3


@consumer_db
def test_a_refused_message_is_answered_at_once(bot, make_console_user, _no_leftover_tasks):
    from switchboard.metering import admission

    communicator = _socket(make_console_user("admin", bot.tenant))

    async def talk() -> list[dict[str, Any]]:
        connected, _ = await communicator.connect()
        assert connected
        await communicator.send_json_to({"bot": str(bot.pk), "text": "hello"})
        answers = [await communicator.receive_json_from(timeout=5) for _ in range(2)]
        await communicator.disconnect()
        return answers

    exhausted = admission.Decision.refused("quota_exhausted")
    with mock.patch.object(admission, "_check_rates", return_value=exhausted):
        accepted, done = async_to_sync(talk)()
    assert accepted["type"] == "accepted"
    assert done["type"] == "done" and done["refusal"] == "quota_exhausted" and done["text"]


# --- generation streams to the group (simulator, no worker) ---------------------------


def _listen(group: str) -> tuple[Any, str]:
    from channels.layers import get_channel_layer

    layer = get_channel_layer()

    async def join() -> str:
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        return channel

    return layer, async_to_sync(join)()


def _drain(layer: Any, channel: str, until: Callable[[dict[str, Any]], bool]) -> list[Any]:
    import asyncio

    async def read() -> list[Any]:
        events = []
        while not events or not until(events[-1]):
            events.append(await asyncio.wait_for(layer.receive(channel), timeout=10))
        return events

    return async_to_sync(read)()


@pytest.mark.django_db
def test_generation_streams_console_replies_to_the_messages_group(bot, endpoint):
    from switchboard.console.consumers import console_connector
    from switchboard.conversations.services import (
        live_group,
        message_generate_reply,
        message_receive,
    )
    from switchboard.metering.models import UsageRecord

    inbound = message_receive(
        connector=console_connector(bot), inbound=_console_inbound("9", "Tell me a story")
    ).message
    layer, channel = _listen(live_group(inbound.pk))

    reply = message_generate_reply(message_id=str(inbound.pk))

    events = _drain(layer, channel, lambda e: e["type"] == "chat.done")
    deltas = [e for e in events if e["type"] == "chat.delta"]
    done = events[-1]
    assert len(deltas) >= 2
    assert [d["seq"] for d in events] == sorted(d["seq"] for d in events)
    assert "".join(d["text"] for d in deltas) == reply.text == done["text"]
    assert done["reply"] == str(reply.pk) and done["message"] == str(inbound.pk)
    assert done["completion_tokens"] == reply.completion_tokens > 0
    assert done["endpoint"] == endpoint.name
    # Metered like any message.
    assert UsageRecord.objects.filter(message_id=inbound.pk, outcome="ok").exists()


@pytest.mark.django_db
def test_other_channels_generate_the_same_way_without_publishing(bot, endpoint):
    from switchboard.bots.services import connector_create_webhook
    from switchboard.conversations import services

    webhook = connector_create_webhook(bot=bot, name="Orders")
    inbound = services.message_receive(
        connector=webhook,
        inbound=InboundMessage(
            channel="webhook",
            provider_message_id="w-1",
            user_id="alice",
            conversation_key="c",
            text="Where is my order?",
        ),
    ).message
    with mock.patch.object(services, "get_channel_layer") as layer:
        reply = services.message_generate_reply(message_id=str(inbound.pk))
    layer.assert_not_called()
    assert "Where is my order?" in reply.text
    assert reply.prompt_tokens > 0 and reply.completion_tokens > 0
    assert reply.endpoint_id == endpoint.pk and reply.finish_reason
    assert 0 <= reply.ttft_ms <= reply.latency_ms


@pytest.mark.django_db
def test_a_failed_console_generation_publishes_an_error(bot):
    from inference import PoolUnavailable
    from switchboard.console.consumers import console_connector
    from switchboard.conversations.services import (
        live_group,
        message_generate_reply,
        message_receive,
    )

    inbound = message_receive(
        connector=console_connector(bot), inbound=_console_inbound("10")
    ).message
    layer, channel = _listen(live_group(inbound.pk))
    with pytest.raises(PoolUnavailable):  # no endpoint at all
        message_generate_reply(message_id=str(inbound.pk))
    [event] = _drain(layer, channel, lambda e: True)
    assert event["type"] == "chat.error" and event["message"] == str(inbound.pk)
    assert event["error"]
