"""Bad input at the Tmall Genie (AliGenie) ingress, over real HTTP: a clear JSON error,
nothing stored, nothing queued.

AliGenie signs nothing and sends no timestamp (PROTOCOLS.md §D.1, "No HMAC or signature
header was found", response timeout and retry semantics UNKNOWN). A request is
authenticated only by the secret token in the URL, the skill id and, when configured,
the RSA-encrypted body. Staleness therefore cannot be checked by this protocol: an old
request captured and replayed later is indistinguishable from a fresh retry. What the
ingress can and does guarantee is idempotence: a replayed request (same requestId) stores
one message, queues one generation and gets the same answer.

No worker runs here, so an accepted turn is answered `ASK_INF` once the connector's (small)
voice budget has passed, and its generation stays in the `realtime` queue.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis
from django.test import override_settings

from switchboard.bots.models import Bot, Connector
from switchboard.conversations.models import Conversation, Message
from tests.support import aligenie_client as genie
from tests.support.aligenie_fixtures import ingress_url
from tests.support.ingress import assert_refused

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("purge_queues")]

SKILL_ID = 8973
OWNERSHIP_NAME = "a1b2c3d4e5f6"
OWNERSHIP_CONTENT = "aligenie-proof-0f9e8d7c6b5a\n"


@pytest.fixture
def speaker(bot: Bot) -> Connector:
    from switchboard.bots.services import connector_create_aligenie

    return connector_create_aligenie(
        bot=bot,
        name="Kitchen speaker",
        skill_id=SKILL_ID,
        voice_budget_ms=200,
        ownership_file_name=f"{OWNERSHIP_NAME}.txt",
        ownership_file_content=OWNERSHIP_CONTENT,
    )


@pytest.fixture
def encrypted_speaker(bot: Bot) -> tuple[Connector, str]:
    """A connector that requires encryption, and the public key the sender encrypts with."""
    from switchboard.bots.services import connector_create_aligenie, connector_generate_keypair

    connector = connector_create_aligenie(
        bot=bot, name="Secure speaker", skill_id=SKILL_ID, voice_budget_ms=200
    )
    public_pem = connector_generate_keypair(connector=connector)
    return connector, public_pem


@pytest.fixture
def post(live_server: Any) -> Callable[..., httpx.Response]:
    """POST a body to a connector's AliGenie URL (its own token unless `token` is given)."""

    def send(
        connector: Connector,
        body: dict[str, Any] | bytes,
        *,
        token: str | None = None,
        connector_id: str | None = None,
    ) -> httpx.Response:
        url = ingress_url(live_server.url, connector, token=token)
        if connector_id is not None:
            url = f"{live_server.url}/hooks/aligenie/{connector_id}/{connector.path_token}/"
        return genie.post(url, body, timeout=30)

    return send


def query(**overrides: Any) -> dict[str, Any]:
    return genie.task_query("我想吃东坡肉", skill_id=SKILL_ID, **overrides)


# --- who may call -------------------------------------------------------------------------


def test_wrong_token_is_404_exactly_like_an_unknown_connector(speaker, post, queued_tasks) -> None:
    wrong = post(speaker, query(), token="x" * len(speaker.path_token))
    unknown = post(speaker, query(), connector_id=str(uuid.uuid4()))
    assert_refused(wrong, 404, "unknown_connector", "no enabled Tmall Genie", queued_tasks)
    assert (wrong.status_code, wrong.json()) == (unknown.status_code, unknown.json())


def test_another_connectors_token_is_404(speaker, bot, post, queued_tasks) -> None:
    from switchboard.bots.services import connector_create_aligenie

    other = connector_create_aligenie(bot=bot, name="Other speaker", skill_id=SKILL_ID)
    response = post(speaker, query(), token=other.path_token)
    assert_refused(response, 404, "unknown_connector", "no enabled Tmall Genie", queued_tasks)


def test_token_stops_working_once_rotated(speaker, post, queued_tasks) -> None:
    from switchboard.bots.services import connector_rotate_secret

    old_token = speaker.path_token
    connector_rotate_secret(connector=speaker)
    response = post(speaker, query(), token=old_token)
    assert_refused(response, 404, "unknown_connector", "no enabled Tmall Genie", queued_tasks)


@pytest.mark.parametrize("target", [str(uuid.uuid4()), "not-a-uuid", "0"])
def test_unknown_or_malformed_connector_id_is_404(speaker, post, queued_tasks, target) -> None:
    response = post(speaker, query(), connector_id=target)
    assert_refused(response, 404, "unknown_connector", "no enabled Tmall Genie", queued_tasks)


def test_disabled_connector_is_404(speaker, post, queued_tasks) -> None:
    Connector.objects.filter(pk=speaker.pk).update(enabled=False)
    response = post(speaker, query())
    assert_refused(response, 404, "unknown_connector", "no enabled Tmall Genie", queued_tasks)


def test_webhook_connector_id_is_404_at_the_aligenie_ingress(connector, post, queued_tasks) -> None:
    # A connector of another kind: its id does not open the AliGenie door, whatever the token.
    response = post(connector, query(), token="anything")
    assert_refused(response, 404, "unknown_connector", "no enabled Tmall Genie", queued_tasks)


def test_query_for_another_skill_is_401(speaker, post, queued_tasks) -> None:
    response = post(speaker, genie.task_query("你好", skill_id=SKILL_ID + 1))
    error = assert_refused(
        response, 401, "invalid_signature", f"skill {SKILL_ID + 1}", queued_tasks
    )
    assert error["details"] == [{"field": "skillId", "message": f"expected {SKILL_ID}"}]


def test_query_without_skill_id_is_401_when_the_connector_pins_one(
    speaker, post, queued_tasks
) -> None:
    body = query()
    del body["skillId"]
    response = post(speaker, body)
    error = assert_refused(response, 401, "invalid_signature", "no skillId", queued_tasks)
    assert error["details"][0]["field"] == "skillId"


# --- encryption -----------------------------------------------------------------------------


def test_plaintext_to_a_connector_that_requires_encryption_is_401(
    encrypted_speaker, post, queued_tasks
) -> None:
    connector, _ = encrypted_speaker
    response = post(connector, query())
    assert_refused(response, 401, "invalid_signature", "requires encrypted requests", queued_tasks)


def test_encrypted_body_without_a_configured_key_is_400(speaker, post, queued_tasks) -> None:
    _, public_pem = genie.generate_keypair()
    response = post(speaker, genie.encrypt_query(query(), public_pem))
    assert_refused(response, 400, "malformed_payload", "encryption is not configured", queued_tasks)


@pytest.mark.parametrize(
    "security_query",
    [
        pytest.param("bm90IGNpcGhlcnRleHQ=", id="base64-but-not-whole-blocks"),
        pytest.param("%%% not base64 %%%", id="not-base64"),
        pytest.param("A" * 172, id="one-block-of-garbage"),
    ],
)
def test_garbage_ciphertext_is_401(encrypted_speaker, post, queued_tasks, security_query) -> None:
    connector, _ = encrypted_speaker
    body = {"queryMetaInfo": {"securityMode": "RSA"}, "securityQuery": security_query}
    response = post(connector, body)
    assert_refused(response, 401, "invalid_signature", "could not be decrypted", queued_tasks)


def test_body_encrypted_for_another_key_is_401(encrypted_speaker, post, queued_tasks) -> None:
    connector, _ = encrypted_speaker
    _, someone_elses_public_pem = genie.generate_keypair()
    response = post(connector, genie.encrypt_query(query(), someone_elses_public_pem))
    assert_refused(response, 401, "invalid_signature", "could not be decrypted", queued_tasks)


def test_encrypted_query_with_a_missing_session_id_is_400_after_decryption(
    encrypted_speaker, post, queued_tasks
) -> None:
    connector, public_pem = encrypted_speaker
    body = query()
    del body["sessionId"]
    response = post(connector, genie.encrypt_query(body, public_pem))
    error = assert_refused(response, 400, "malformed_payload", "sessionId", queued_tasks)
    assert [d["field"] for d in error["details"]] == ["sessionId"]


# --- shape and size -------------------------------------------------------------------------


def test_malformed_json_is_400(speaker, post, queued_tasks) -> None:
    response = post(speaker, b'{"sessionId": "s-1", "utterance": ')
    assert_refused(response, 400, "malformed_payload", "not valid JSON", queued_tasks)


def test_json_that_is_not_an_object_is_400(speaker, post, queued_tasks) -> None:
    response = post(speaker, b'["sessionId", "s-1"]')
    assert_refused(response, 400, "malformed_payload", "JSON object", queued_tasks)


def test_body_that_is_not_utf8_is_400(speaker, post, queued_tasks) -> None:
    response = post(speaker, b'{"sessionId": "\xff\xfe"}')
    assert_refused(response, 400, "malformed_payload", "UTF-8", queued_tasks)


def test_missing_session_id_is_400_and_named_in_details(speaker, post, queued_tasks) -> None:
    body = query()
    del body["sessionId"]
    response = post(speaker, body)
    error = assert_refused(response, 400, "malformed_payload", "sessionId", queued_tasks)
    assert error["details"] == [
        {"field": "sessionId", "message": "is required (a non-empty string)"}
    ]


def test_every_wrongly_typed_field_is_listed(speaker, post, queued_tasks) -> None:
    body = {**query(), "sessionId": 42, "intentId": "seventeen", "slotEntities": {}}
    response = post(speaker, body)
    error = assert_refused(response, 400, "malformed_payload", "sessionId", queued_tasks)
    assert {d["field"] for d in error["details"]} == {"sessionId", "intentId", "slotEntities"}


def test_query_with_neither_utterance_nor_intent_is_400(speaker, post, queued_tasks) -> None:
    body = {**query(), "utterance": "", "intentName": ""}
    response = post(speaker, body)
    assert_refused(response, 400, "malformed_payload", "nothing to answer", queued_tasks)


@override_settings(SWITCHBOARD_ALIGENIE_MAX_BYTES=1024)
def test_body_over_the_size_limit_is_413(speaker, post, queued_tasks) -> None:
    response = post(speaker, genie.task_query("东坡肉" * 400, skill_id=SKILL_ID))
    assert_refused(response, 413, "payload_too_large", "1024 bytes", queued_tasks)


def test_get_is_405_with_json(speaker, live_server) -> None:
    response = httpx.get(ingress_url(live_server.url, speaker), timeout=30)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert response.headers["allow"] == "POST"
    assert Message.objects.count() == 0


# --- what is accepted -----------------------------------------------------------------------


def test_valid_turn_is_stored_and_queued_on_the_realtime_queue(
    speaker, bot, post, queued_tasks, redis_client: redis.Redis
) -> None:
    body = query(intent_id=17063)
    response = post(speaker, body)
    assert response.status_code == 200, response.text
    # No worker runs, so the answer is "still thinking" with the microphone left open.
    value = response.json()["returnValue"]
    assert response.json()["returnCode"] == "0"
    assert value["resultType"] == "ASK_INF"
    assert value["reply"] == bot.voice_pending_reply
    assert value["askedInfos"] == [{"parameterName": "question", "intentId": 17063}]
    message = Message.objects.get(direction="in")
    assert message.provider_message_id == body["requestId"]
    assert message.conversation.external_key == f"session:{body['sessionId']}"
    assert (redis_client.llen("realtime"), queued_tasks()) == (1, 1)


def test_replayed_request_stores_one_message_and_gets_the_same_answer(
    speaker, post, queued_tasks
) -> None:
    """No timestamp or signature to check: a replay is answered idempotently instead."""
    body = query()
    first = post(speaker, body)
    replay = post(speaker, body)
    assert first.status_code == replay.status_code == 200
    assert replay.json() == first.json()
    assert Message.objects.filter(direction="in").count() == 1
    assert Conversation.objects.count() == 1
    assert queued_tasks() == 1


def test_replay_without_request_id_is_recognised_by_its_content(
    speaker, post, queued_tasks
) -> None:
    body = query(request_id="", slots=[genie.slot_entity("foodname", "东坡肉")])
    first = post(speaker, body)
    replay = post(speaker, json.loads(json.dumps(body)))
    assert replay.json() == first.json()
    assert Message.objects.filter(direction="in").count() == 1
    assert queued_tasks() == 1


# --- ownership file -------------------------------------------------------------------------


def test_ownership_file_is_served_as_plain_text(speaker, live_server) -> None:
    response = httpx.get(f"{live_server.url}/aligenie/{OWNERSHIP_NAME}.txt", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == OWNERSHIP_CONTENT


@pytest.mark.parametrize("name", ["0000deadbeef", OWNERSHIP_NAME.upper(), f"{OWNERSHIP_NAME}x"])
def test_unknown_ownership_file_is_404(speaker, live_server, name) -> None:
    response = httpx.get(f"{live_server.url}/aligenie/{name}.txt", timeout=30)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_ownership_file_of_a_disabled_connector_is_404(speaker, live_server) -> None:
    Connector.objects.filter(pk=speaker.pk).update(enabled=False)
    response = httpx.get(f"{live_server.url}/aligenie/{OWNERSHIP_NAME}.txt", timeout=30)
    assert response.status_code == 404
