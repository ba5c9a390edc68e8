"""Sending a message to a bot through the REST API, in each mode, with a real Celery
worker (async, sync) or the web process itself (stream) and the vLLM simulator."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _ready(worker: Any, endpoint: Any, bot: Any) -> None:
    from switchboard.api.completions import api_connector

    # Made here rather than by a server process (see test_openai._api_connector).
    api_connector(bot)


def _send(api: Any, bot: Any, **body: Any) -> Any:
    return api.post(f"/api/v1/bots/{bot.pk}/messages/", body, format="json")


def test_async_send_is_answered_and_readable(api: Any, bot: Any) -> None:
    response = _send(api, bot, user="alice", text="Hello async")
    assert response.status_code == 202, response.content
    message_id = response.json()["message"]["id"]
    assert response.json()["reply"] is None

    def replied() -> dict[str, Any] | None:
        body = api.get(f"/api/v1/messages/{message_id}/").json()
        return body if body["reply"] else None

    message = wait_until(replied, timeout=30, what="the reply")
    reply = api.get(f"/api/v1/messages/{message['reply']}/").json()
    assert "Hello async" in reply["text"]
    assert reply["direction"] == "out" and reply["reply_to"] == message_id
    wait_until(
        lambda: api.get(f"/api/v1/messages/{message['reply']}/").json()["status"] == "delivered",
        timeout=30,
        what="the reply marked delivered",
    )


def test_async_send_with_a_callback_is_delivered_signed(api: Any, bot: Any, receiver: Any) -> None:
    secret = api.post(f"/api/v1/bots/{bot.pk}/callback-secret/").json()["secret"]
    response = _send(
        api, bot, user="bob", text="Call me back", callback_url=receiver.url, conversation="c-1"
    )
    assert response.status_code == 202
    [callback] = wait_until(receiver.accepted, timeout=30, what="the callback")
    event = Webhook(secret).verify(callback.body, callback.headers)
    assert event["data"]["conversation_id"] == "c-1"
    assert "Call me back" in event["data"]["text"]
    with pytest.raises(Exception, match=r"[Ss]ignature"):
        Webhook("whsec_" + "A" * 32).verify(callback.body, callback.headers)


def test_a_retried_message_id_is_answered_once(api: Any, bot: Any, tenant: Any) -> None:
    from switchboard.conversations.models import Message

    first = _send(api, bot, user="carol", text="Once", message_id="order-42")
    again = _send(api, bot, user="carol", text="Once", message_id="order-42")
    assert first.json()["message"]["id"] == again.json()["message"]["id"]
    wait_until(
        lambda: (
            Message.objects.for_tenant(tenant).filter(direction=Message.Direction.OUTBOUND).exists()
        ),
        timeout=30,
        what="the reply",
    )
    assert Message.objects.for_tenant(tenant).count() == 2  # one turn, one reply


def test_sync_send_waits_for_the_reply(api: Any, bot: Any) -> None:
    response = _send(api, bot, user="dave", text="Quick one", mode="sync", timeout=30)
    assert response.status_code == 200, response.content
    body = response.json()
    assert "Quick one" in body["reply"]["text"]
    assert body["message"]["status"] == "replied"
    # The conversation remembers: the next turn's prompt holds the first exchange.
    second = _send(api, bot, user="dave", text="And again", mode="sync", timeout=30).json()
    assert second["message"]["conversation"] == body["message"]["conversation"]
    assert second["reply"]["prompt_tokens"] > body["reply"]["prompt_tokens"] + 5


def test_sync_send_past_its_timeout_answers_202(api: Any, bot: Any) -> None:
    from switchboard.bots.models import Bot

    # No endpoint serves this model: the worker keeps retrying, no reply comes in time.
    Bot.objects.filter(pk=bot.pk).update(model_name="nobody/serves-this")
    response = _send(api, bot, user="erin", text="Anyone?", mode="sync", timeout=1)
    assert response.status_code == 202
    assert response.json()["reply"] is None
    # The message is still queued: once the model is served again a retry answers it.
    # Waiting for that also keeps the worker out of the teardown's TRUNCATE (a retry
    # mid-flush deadlocked it once).
    Bot.objects.filter(pk=bot.pk).update(model_name=bot.model_name)
    message_id = response.json()["message"]["id"]
    message = wait_until(
        lambda: (
            body
            if (body := api.get(f"/api/v1/messages/{message_id}/").json())["status"]
            in ("replied", "failed")
            else None
        ),
        timeout=60,
        what="the retried message answered",
    )
    assert message["status"] == "replied", message


def test_refused_sends_store_nothing(api: Any, bot: Any, tenant: Any, licence_for: Any) -> None:
    from switchboard.conversations.models import Message

    licence_for(tenant, mau_limit=1)
    assert _send(api, bot, user="first", text="hi").status_code == 202
    response = _send(api, bot, user="second", text="hi")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "mau_limit"
    assert Message.objects.for_tenant(tenant).filter(text="hi").count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text": "no user"}, "user"),
        ({"user": "u"}, "text"),
        ({"user": "u", "text": "   "}, "text"),
        ({"user": "u", "text": "x", "mode": "later"}, "mode"),
        ({"user": "u", "text": "x", "callback_url": "ftp://nope"}, "callback_url"),
        ({"user": "u" * 201, "text": "x"}, "user"),
    ],
)
def test_malformed_sends_name_the_field(
    api: Any, bot: Any, tenant: Any, body: dict[str, Any], field: str
) -> None:
    from switchboard.conversations.models import Message

    response = api.post(f"/api/v1/bots/{bot.pk}/messages/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["details"]
    assert not Message.objects.for_tenant(tenant).exists()


def test_unknown_bot_is_404(api: Any) -> None:
    response = _send(api, type("B", (), {"pk": uuid.uuid4()}), user="u", text="x")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_stream_send_is_server_sent_events(web: str, key: str, bot: Any, tenant: Any) -> None:
    from switchboard.conversations.models import Message

    events: list[tuple[str, Any]] = []
    with httpx.stream(
        "POST",
        f"{web}/api/v1/bots/{bot.pk}/messages/",
        headers={"Authorization": f"Bearer {key}"},
        json={"user": "frank", "text": "Stream it", "mode": "stream"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:].strip()
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    names = [n for n, _ in events]
    assert names[0] == "message" and names[-1] == "done"
    deltas = [data["text"] for n, data in events if n == "delta"]
    assert len(deltas) > 2
    done = events[-1][1]
    assert "".join(deltas) == done["text"]
    stored = Message.objects.for_tenant(tenant).get(direction=Message.Direction.OUTBOUND)
    assert stored.text == done["text"] and stored.status == "delivered"
