"""Bad input at the signed-webhook ingress: a clear JSON error, nothing stored or queued."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
from django.test import override_settings

from connectors.webhook import sign_headers
from switchboard.conversations.models import Message
from tests.support.ingress import assert_refused

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("purge_queues")]

GOOD = {"message_id": "m-1", "user_id": "u-1", "text": "hello"}


def test_missing_signature_is_401_and_nothing_is_stored(connector, post_webhook, queued_tasks):
    response = post_webhook(connector, GOOD, sign=False)
    assert_refused(response, 401, "invalid_signature", "missing signature headers", queued_tasks)


def test_forged_signature_is_401_and_nothing_is_stored(connector, post_webhook, queued_tasks):
    forged = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="
    response = post_webhook(connector, GOOD, secret=forged)
    assert_refused(response, 401, "invalid_signature", "does not match", queued_tasks)


def test_body_changed_after_signing_is_401(connector, post_webhook, queued_tasks):
    body = json.dumps(GOOD)
    headers = sign_headers(secret=connector.secret, event_id="msg_x", body=body)
    tampered = json.dumps({**GOOD, "text": "transfer all the money"})
    response = post_webhook(connector, tampered, sign=False, headers=headers)
    assert_refused(response, 401, "invalid_signature", "does not match", queued_tasks)


def test_mangled_signature_header_is_401(connector, post_webhook, queued_tasks):
    headers = {
        "webhook-id": "msg_x",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "not-a-signature",
    }
    response = post_webhook(connector, GOOD, sign=False, headers=headers)
    assert_refused(response, 401, "invalid_signature", "malformed", queued_tasks)


@pytest.mark.parametrize("skew, word", [(-3600, "too old"), (3600, "in the future")])
def test_timestamp_outside_tolerance_is_401(connector, post_webhook, queued_tasks, skew, word):
    from datetime import UTC, datetime, timedelta

    body = json.dumps(GOOD)
    at = datetime.now(tz=UTC) + timedelta(seconds=skew)
    headers = sign_headers(secret=connector.secret, event_id="msg_old", body=body, at=at)
    response = post_webhook(connector, body, sign=False, headers=headers)
    assert_refused(response, 401, "invalid_signature", word, queued_tasks)


def test_malformed_json_is_400(connector, post_webhook, queued_tasks):
    response = post_webhook(connector, '{"message_id": "m-1", "text": ')
    assert_refused(response, 400, "malformed_payload", "not valid JSON", queued_tasks)


def test_json_that_is_not_an_object_is_400(connector, post_webhook, queued_tasks):
    response = post_webhook(connector, "[1, 2, 3]")
    assert_refused(response, 400, "malformed_payload", "JSON object", queued_tasks)


def test_body_that_is_not_utf8_is_400(connector, post_webhook, queued_tasks):
    response = post_webhook(connector, b'{"text": "\xff\xfe"}', sign=False)
    assert_refused(response, 400, "malformed_payload", "UTF-8", queued_tasks)


def test_missing_fields_are_400_and_named(connector, post_webhook, queued_tasks):
    response = post_webhook(connector, {"message_id": "m-1"})
    error = assert_refused(response, 400, "malformed_payload", "user_id", queued_tasks)
    assert {d["field"] for d in error["details"]} == {"user_id", "text"}


def test_wrongly_typed_and_empty_fields_are_400(connector, post_webhook, queued_tasks):
    response = post_webhook(connector, {"message_id": 7, "user_id": "u", "text": "   "})
    error = assert_refused(response, 400, "malformed_payload", "message_id", queued_tasks)
    assert {d["field"] for d in error["details"]} == {"message_id", "text"}


@override_settings(SWITCHBOARD_WEBHOOK_MAX_BYTES=1024)
def test_body_over_the_size_limit_is_413(connector, post_webhook, queued_tasks):
    response = post_webhook(connector, {**GOOD, "text": "x" * 2000})
    assert_refused(response, 413, "payload_too_large", "1024 bytes", queued_tasks)


@pytest.mark.parametrize("target", [str(uuid.uuid4()), "not-a-uuid", "0"])
def test_unknown_connector_is_404(connector, post_webhook, queued_tasks, target):
    response = post_webhook(connector, GOOD, connector_id=target)
    assert_refused(response, 404, "unknown_connector", "no enabled webhook connector", queued_tasks)


def test_disabled_connector_is_404(connector, post_webhook, queued_tasks):
    connector.enabled = False
    connector.save()
    response = post_webhook(connector, GOOD)
    assert_refused(response, 404, "unknown_connector", "no enabled webhook connector", queued_tasks)


def test_another_connectors_secret_is_401(connector, bot, post_webhook, queued_tasks):
    from switchboard.bots.services import connector_create_webhook

    other = connector_create_webhook(bot=bot, name="Other", callback_url="")
    response = post_webhook(connector, GOOD, secret=other.secret)
    # The other connector's own message row must not appear either.
    assert_refused(response, 401, "invalid_signature", "does not match", queued_tasks)


def test_get_is_405_with_json(connector, live_server):
    response = httpx.get(f"{live_server.url}/hooks/webhook/{connector.pk}/")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert response.headers["allow"] == "POST"


def test_valid_message_is_202_stored_and_queued(connector, post_webhook, queued_tasks):
    response = post_webhook(connector, {**GOOD, "conversation_id": "order-42"})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["message_id"] == "m-1" and body["duplicate"] is False
    message = Message.objects.get(pk=body["id"])
    assert (message.direction, message.status, message.text) == ("in", "received", "hello")
    assert message.conversation.external_key == "conv:order-42"
    assert queued_tasks() == 1


def test_replayed_request_is_acknowledged_once(connector, post_webhook, queued_tasks):
    body = json.dumps(GOOD)
    headers = sign_headers(secret=connector.secret, event_id="msg_replay", body=body)
    first = post_webhook(connector, body, sign=False, headers=headers)
    replay = post_webhook(connector, body, sign=False, headers=headers)
    assert first.status_code == replay.status_code == 202
    assert replay.json()["duplicate"] is True
    assert replay.json()["id"] == first.json()["id"]
    assert Message.objects.count() == 1
    assert queued_tasks() == 1
