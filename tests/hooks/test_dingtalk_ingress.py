"""The DingTalk HTTP-callback ingress over real HTTP: bad input gets a clear JSON error and
changes nothing; good input is stored once and queued once (PROTOCOLS.md §A)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from django.test import override_settings

from connectors.dingtalk import compute_sign
from switchboard.conversations.models import Conversation, EndUser, Message
from tests.support.dingtalk_fixtures import (
    FAKE_CORP_ID,
    body_without,
    callback_for,
    create_dingtalk_connector,
    post_callback,
)
from tests.support.fake_dingtalk import FakeDingTalk
from tests.support.ingress import assert_refused

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("purge_queues")]

HOUR_MS = 3_600_000
Post = Callable[..., httpx.Response]


@pytest.fixture(scope="module")
def ding() -> Iterator[FakeDingTalk]:
    with FakeDingTalk() as fake:
        yield fake


@pytest.fixture
def dingtalk(bot: Any, ding: FakeDingTalk) -> Any:
    """An HTTP-mode connector pinned to the fake's robotCode and chatbotCorpId."""
    return create_dingtalk_connector(bot, ding)


@pytest.fixture
def post(live_server: Any, dingtalk: Any) -> Post:
    def send(
        headers: dict[str, str], body: bytes, *, connector_id: str | None = None
    ) -> httpx.Response:
        return post_callback(live_server.url, connector_id or str(dingtalk.pk), headers, body)

    return send


def signed_at(timestamp_ms: int, secret: str) -> dict[str, str]:
    timestamp = str(timestamp_ms)
    return {
        "Content-Type": "application/json; charset=utf-8",
        "timestamp": timestamp,
        "sign": compute_sign(timestamp, secret),
    }


# --- signature ------------------------------------------------------------------------


@pytest.mark.parametrize("missing", [("timestamp",), ("sign",), ("timestamp", "sign")])
def test_missing_signature_headers_are_401_and_named(
    dingtalk: Any,
    ding: FakeDingTalk,
    post: Post,
    queued_tasks: Callable[[], int],
    missing: tuple[str, ...],
) -> None:
    headers, body = callback_for(dingtalk, ding)
    for name in missing:
        del headers[name]
    error = assert_refused(post(headers, body), 401, "invalid_signature", "missing", queued_tasks)
    assert {d["field"] for d in error["details"]} == set(missing)
    for name in missing:
        assert name in error["message"]


def test_sign_made_with_another_secret_is_401(
    dingtalk: Any, ding: FakeDingTalk, post: Post, queued_tasks: Callable[[], int]
) -> None:
    headers, body = callback_for(dingtalk, ding, app_secret="someone-elses-app-secret")
    assert_refused(post(headers, body), 401, "invalid_signature", "does not match", queued_tasks)


def test_url_encoded_sign_is_401_with_a_hint(
    dingtalk: Any, ding: FakeDingTalk, post: Post, queued_tasks: Callable[[], int]
) -> None:
    headers, body = callback_for(dingtalk, ding)
    # A 32-byte MAC in base64 always ends in "=", which URL-encoding turns into "%3D".
    encoded = quote(headers["sign"], safe="")
    assert encoded != headers["sign"]
    headers["sign"] = encoded
    assert_refused(post(headers, body), 401, "invalid_signature", "URL-encoded", queued_tasks)


@pytest.mark.parametrize(
    "offset_ms, word",
    [(-HOUR_MS - 60_000, "too old"), (HOUR_MS + 60_000, "in the future")],
    ids=["stale", "future"],
)
def test_timestamp_more_than_an_hour_off_is_401_even_when_correctly_signed(
    dingtalk: Any,
    ding: FakeDingTalk,
    post: Post,
    queued_tasks: Callable[[], int],
    offset_ms: int,
    word: str,
) -> None:
    headers, body = callback_for(dingtalk, ding)
    headers.update(signed_at(int(time.time() * 1000) + offset_ms, dingtalk.secret))
    error = assert_refused(post(headers, body), 401, "invalid_signature", word, queued_tasks)
    assert error["details"] == [{"field": "timestamp", "message": word}]


def test_timestamp_that_is_not_milliseconds_is_401(
    dingtalk: Any, ding: FakeDingTalk, post: Post, queued_tasks: Callable[[], int]
) -> None:
    headers, body = callback_for(dingtalk, ding)
    headers.update(timestamp="2024-01-01T00:00:00Z", sign=compute_sign("x", dingtalk.secret))
    assert_refused(post(headers, body), 401, "invalid_signature", "milliseconds", queued_tasks)


# --- body -----------------------------------------------------------------------------


def test_malformed_json_is_400(
    dingtalk: Any, ding: FakeDingTalk, post: Post, queued_tasks: Callable[[], int]
) -> None:
    headers, _ = callback_for(dingtalk, ding)
    response = post(headers, b'{"msgId": "m1", "msgtype": ')
    assert_refused(response, 400, "malformed_payload", "not valid JSON", queued_tasks)


def test_body_that_is_not_an_object_is_400(
    dingtalk: Any, ding: FakeDingTalk, post: Post, queued_tasks: Callable[[], int]
) -> None:
    headers, _ = callback_for(dingtalk, ding)
    assert_refused(post(headers, b"[1, 2]"), 400, "malformed_payload", "JSON object", queued_tasks)


def test_missing_message_fields_are_400_and_each_is_named(
    dingtalk: Any, ding: FakeDingTalk, post: Post, queued_tasks: Callable[[], int]
) -> None:
    headers, body = callback_for(dingtalk, ding)
    body = body_without(body, "msgId", "msgtype", "conversationId")
    error = assert_refused(post(headers, body), 400, "malformed_payload", "msgId", queued_tasks)
    assert {d["field"] for d in error["details"]} == {"msgId", "msgtype", "conversationId"}
    assert "msgtype" in error["message"] and "conversationId" in error["message"]


@override_settings(SWITCHBOARD_WEBHOOK_MAX_BYTES=2048)
def test_body_over_the_size_limit_is_413(
    dingtalk: Any, ding: FakeDingTalk, post: Post, queued_tasks: Callable[[], int]
) -> None:
    headers, body = callback_for(dingtalk, ding, text="长" * 2000)
    assert len(body) > 2048
    assert_refused(post(headers, body), 413, "payload_too_large", "2048 bytes", queued_tasks)


# --- which connector ------------------------------------------------------------------


@pytest.mark.parametrize("target", [str(uuid.uuid4()), "not-a-uuid", "0"])
def test_unknown_or_malformed_connector_id_is_404(
    dingtalk: Any, ding: FakeDingTalk, post: Post, queued_tasks: Callable[[], int], target: str
) -> None:
    headers, body = callback_for(dingtalk, ding)
    response = post(headers, body, connector_id=target)
    assert_refused(response, 404, "unknown_connector", "DingTalk", queued_tasks)


def test_disabled_connector_is_404(
    dingtalk: Any, ding: FakeDingTalk, post: Post, queued_tasks: Callable[[], int]
) -> None:
    dingtalk.enabled = False
    dingtalk.save()
    headers, body = callback_for(dingtalk, ding)
    assert_refused(post(headers, body), 404, "unknown_connector", "DingTalk", queued_tasks)


def test_stream_mode_connector_has_no_http_ingress(
    bot: Any, ding: FakeDingTalk, post: Post, queued_tasks: Callable[[], int]
) -> None:
    stream = create_dingtalk_connector(bot, ding, mode="stream")
    headers, body = callback_for(stream, ding)
    response = post(headers, body, connector_id=str(stream.pk))
    assert_refused(response, 404, "unknown_connector", "HTTP-mode", queued_tasks)


def test_webhook_connector_id_is_404_at_the_dingtalk_url(
    dingtalk: Any, ding: FakeDingTalk, bot: Any, post: Post, queued_tasks: Callable[[], int]
) -> None:
    from switchboard.bots.services import connector_create_webhook

    webhook = connector_create_webhook(bot=bot, name="Plain", secret=dingtalk.secret)
    headers, body = callback_for(dingtalk, ding)
    response = post(headers, body, connector_id=str(webhook.pk))
    assert_refused(response, 404, "unknown_connector", "DingTalk", queued_tasks)


@pytest.mark.parametrize(
    "field, value",
    [("robotCode", "dingsomeotherrobot"), ("chatbotCorpId", "dingsomeothercorp")],
)
def test_message_for_another_robot_or_corp_is_403(
    dingtalk: Any,
    ding: FakeDingTalk,
    post: Post,
    queued_tasks: Callable[[], int],
    field: str,
    value: str,
) -> None:
    headers, body = callback_for(dingtalk, ding, extra={field: value})
    assert_refused(post(headers, body), 403, "wrong_target", field, queued_tasks)


def test_unpinned_connector_accepts_any_robot_and_corp(
    bot: Any, ding: FakeDingTalk, post: Post, queued_tasks: Callable[[], int]
) -> None:
    loose = create_dingtalk_connector(bot, ding, robot_code="", corp_id="")
    headers, body = callback_for(
        loose, ding, extra={"robotCode": "dinganyrobot", "chatbotCorpId": "dinganycorp"}
    )
    response = post(headers, body, connector_id=str(loose.pk))
    assert response.status_code == 200, response.text
    assert Message.objects.filter(connector=loose).count() == 1
    assert queued_tasks() == 1


def test_get_is_405_with_json(
    dingtalk: Any, live_server: Any, queued_tasks: Callable[[], int]
) -> None:
    response = httpx.get(f"{live_server.url}/hooks/dingtalk/{dingtalk.pk}/", trust_env=False)
    assert_refused(response, 405, "method_not_allowed", "POST", queued_tasks)
    assert response.headers["allow"] == "POST"


# --- accepted messages ----------------------------------------------------------------


def test_text_message_is_acknowledged_stored_without_mentions_and_queued(
    dingtalk: Any, ding: FakeDingTalk, post: Post, queued_tasks: Callable[[], int]
) -> None:
    headers, body = callback_for(
        dingtalk, ding, text="@李四 帮我查一下订单", conversation_id="cidDM1=="
    )
    response = post(headers, body)
    assert response.status_code == 200, response.text
    assert response.json() == {"msgtype": "empty"}

    message = Message.objects.get()
    sent = json.loads(body)
    assert (message.direction, message.status) == ("in", "received")
    assert message.text == "帮我查一下订单"
    assert message.provider_message_id == sent["msgId"]
    assert message.conversation.external_key == "dm:cidDM1=="
    assert message.conversation.end_user.external_id == "staff-001"
    assert message.conversation.end_user.display_name == "张三"
    assert message.reply_handle["session_webhook"] == sent["sessionWebhook"]
    assert message.reply_handle["sender_staff_id"] == "staff-001"
    assert queued_tasks() == 1


def test_group_message_lands_in_the_group_conversation(
    dingtalk: Any, ding: FakeDingTalk, post: Post, queued_tasks: Callable[[], int]
) -> None:
    for n, staff in enumerate(["staff-a", "staff-b"]):
        headers, body = callback_for(
            dingtalk,
            ding,
            text=f"question {n}",
            conversation_type="2",
            conversation_id="cidGROUP==",
            sender_staff_id=staff,
        )
        assert post(headers, body).status_code == 200

    conversation = Conversation.objects.get()
    assert conversation.external_key == "group:cidGROUP=="
    assert list(conversation.messages.values_list("text", flat=True)) == [
        "question 0",
        "question 1",
    ]
    assert EndUser.objects.count() == 2
    assert queued_tasks() == 2


def test_picture_gets_the_canned_reply_queued_for_delivery(
    dingtalk: Any, ding: FakeDingTalk, post: Post, queued_tasks: Callable[[], int]
) -> None:
    headers, body = callback_for(dingtalk, ding, msgtype="picture")
    response = post(headers, body)
    assert response.json() == {"msgtype": "empty"}

    inbound = Message.objects.get(direction="in")
    reply = Message.objects.get(direction="out")
    assert inbound.status == "replied" and inbound.reply_handle["answerable"] is False
    assert reply.reply_to_id == inbound.pk and reply.status == "pending"
    assert reply.text == dingtalk.bot.unsupported_message_reply
    assert reply.finish_reason == "canned"
    assert queued_tasks() == 1  # the delivery, and no generation


def test_replayed_request_is_acknowledged_twice_and_stored_once(
    dingtalk: Any, ding: FakeDingTalk, post: Post, queued_tasks: Callable[[], int]
) -> None:
    headers, body = callback_for(dingtalk, ding)
    first = post(headers, body)
    replay = post(headers, body)
    assert first.status_code == replay.status_code == 200
    assert first.json() == replay.json() == {"msgtype": "empty"}
    assert Message.objects.count() == 1
    assert queued_tasks() == 1


def test_dingtalk_retry_with_a_fresh_signature_is_stored_once(
    dingtalk: Any, ding: FakeDingTalk, post: Post, queued_tasks: Callable[[], int]
) -> None:
    msg_id = f"msgRETRY{uuid.uuid4().hex}=="
    now = int(time.time() * 1000)
    first = post(*callback_for(dingtalk, ding, msg_id=msg_id, now_ms=now - 5_000))
    retry_headers, retry_body = callback_for(dingtalk, ding, msg_id=msg_id, now_ms=now)
    retry = post(retry_headers, retry_body)
    assert first.status_code == retry.status_code == 200
    assert Message.objects.count() == 1
    assert Message.objects.get().provider_message_id == msg_id
    assert queued_tasks() == 1


def test_same_msg_id_on_two_connectors_is_two_messages(
    bot: Any, dingtalk: Any, ding: FakeDingTalk, post: Post, queued_tasks: Callable[[], int]
) -> None:
    other = create_dingtalk_connector(bot, ding, own_app=True, corp_id=FAKE_CORP_ID)
    msg_id = f"msgSHARED{uuid.uuid4().hex}=="
    assert post(*callback_for(dingtalk, ding, msg_id=msg_id)).status_code == 200
    response = post(*callback_for(other, ding, msg_id=msg_id), connector_id=str(other.pk))
    assert response.status_code == 200, response.text
    assert Message.objects.filter(provider_message_id=msg_id).count() == 2
    assert queued_tasks() == 2
