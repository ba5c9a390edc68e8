"""The console's test chat end to end: a WebSocket signed in as a tenant admin, a real
Celery worker process generating on a simulated vLLM endpoint process, and the reply's
tokens streamed back through the Redis channel layer as they are generated."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from switchboard.conversations.models import Message
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TIMEOUT = 60


@pytest.fixture
def admin_socket(tenant: Any) -> WebsocketCommunicator:
    from django.contrib.auth import get_user_model

    from switchboard.asgi import application
    from switchboard.console.models import Membership

    user = get_user_model().objects.create_user(username=f"admin-{uuid.uuid4().hex[:6]}")
    Membership.objects.create(user=user, tenant=tenant, role="admin")
    client = Client()
    client.force_login(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    headers = [(b"origin", b"http://localhost"), (b"cookie", cookie.encode())]
    socket = WebsocketCommunicator(application, "/ws/console/chat/", headers=headers)
    socket.user = user  # type: ignore[attr-defined]
    return socket


def _chat(socket: WebsocketCommunicator, frames: list[dict[str, Any]]) -> list[list[Any]]:
    """Send each frame in turn; the events it got, up to and including its `done`."""

    async def talk() -> list[list[Any]]:
        connected, _ = await socket.connect()
        assert connected
        answers = []
        for frame in frames:
            await socket.send_json_to(frame)
            events = [await socket.receive_json_from(timeout=TIMEOUT)]
            assert events[0]["type"] == "accepted", events
            while events[-1]["type"] not in ("done", "error"):
                events.append(await socket.receive_json_from(timeout=TIMEOUT))
            answers.append(events)
        await socket.disconnect()
        return answers

    return async_to_sync(talk)()


def test_the_reply_streams_token_by_token_and_is_stored_as_sent(
    worker, endpoint, bot, admin_socket
):
    from switchboard.metering.models import MonthlyActiveUser, UsageRecord

    [events] = _chat(admin_socket, [{"bot": str(bot.pk), "text": "Where is my order?"}])

    accepted, *deltas, done = events
    assert done["type"] == "done", events
    assert len(deltas) >= 2 and {d["type"] for d in deltas} == {"delta"}
    assert "".join(d["text"] for d in deltas) == done["text"]

    inbound = Message.objects.get(pk=accepted["message"])
    reply = Message.objects.get(reply_to=inbound)
    assert done["text"] == reply.text and "Where is my order?" in reply.text
    assert done["reply"] == str(reply.pk)
    assert (done["prompt_tokens"], done["completion_tokens"]) == (
        reply.prompt_tokens,
        reply.completion_tokens,
    )
    assert done["endpoint"] == endpoint.name and reply.endpoint_id == endpoint.pk
    assert 0 <= done["ttft_ms"] <= done["latency_ms"]
    inbound.refresh_from_db()
    assert inbound.status == "replied"
    # Metered like any message; delivered in-app; the admin is not an end user in MAU.
    assert UsageRecord.objects.filter(message_id=inbound.pk, outcome="ok").count() == 1
    wait_until(
        lambda: Message.objects.filter(pk=reply.pk, status="delivered").exists(),
        timeout=TIMEOUT,
        what="the console reply to be marked delivered",
    )
    end_user = inbound.conversation.end_user
    assert (end_user.channel, end_user.external_id) == ("console", str(admin_socket.user.pk))
    assert not MonthlyActiveUser.objects.filter(end_user=end_user).exists()


def test_the_conversation_history_reaches_the_next_prompt(worker, endpoint, bot, admin_socket):
    frames = [
        {"bot": str(bot.pk), "text": "first question"},
        {"bot": str(bot.pk), "text": "second question"},
    ]
    first, second = _chat(admin_socket, frames)
    assert first[-1]["type"] == second[-1]["type"] == "done"
    assert first[0]["conversation"] == second[0]["conversation"]
    # The second prompt carried the first exchange.
    assert second[-1]["prompt_tokens"] > first[-1]["prompt_tokens"] + 5
    # Settle: the worker's in-app deliveries are done before the tables are flushed.
    wait_until(
        lambda: Message.objects.filter(direction="out", status="delivered").count() == 2,
        timeout=TIMEOUT,
        what="both replies to be marked delivered",
    )
