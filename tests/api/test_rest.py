"""The REST API in-process (DRF's test client): CRUD, scopes, errors, pagination, usage."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

pytestmark = pytest.mark.django_db


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"]
    return error  # type: ignore[no-any-return]


# --- keys -------------------------------------------------------------------------------


def test_keys_are_stored_hashed_and_never_in_clear(tenant: Any, make_key: Any) -> None:
    from django.db import connection

    key, plaintext = make_key(tenant)
    secret = plaintext.rsplit("_", 1)[1]
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM apikeys_apikey WHERE id = %s", [key.pk])
        row = cursor.fetchone()
    assert not any(secret in str(value) for value in row)
    assert key.prefix in plaintext and len(key.secret_hash) == 64


def test_revoked_and_expired_keys_are_rejected(tenant: Any, make_key: Any) -> None:
    from rest_framework.test import APIClient

    from switchboard.apikeys.models import ApiKey
    from switchboard.apikeys.services import api_key_revoke

    revoked, revoked_plain = make_key(tenant)
    api_key_revoke(key=revoked)
    expired, expired_plain = make_key(tenant)
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    live_plain = make_key(tenant)[1]
    client = APIClient()
    for bad in (revoked_plain, expired_plain, live_plain[:-1] + "x", "sb_nope_nope", "garbage"):
        response = client.get("/api/v1/bots/", HTTP_AUTHORIZATION=f"Bearer {bad}")
        _error(response, 401, "invalid_api_key")
    _error(client.get("/api/v1/bots/"), 401, "not_authenticated")
    _error(
        client.get("/api/v1/bots/", HTTP_AUTHORIZATION=f"Basic {live_plain}"),
        401,
        "invalid_authorization",
    )
    assert client.get("/api/v1/bots/", HTTP_AUTHORIZATION=f"Bearer {live_plain}").status_code == 200


def test_scopes_are_enforced(tenant: Any, make_key: Any, bot: Any) -> None:
    from rest_framework.test import APIClient

    def client(*scopes: str) -> Any:
        c = APIClient()
        c.credentials(HTTP_AUTHORIZATION=f"Bearer {make_key(tenant, scopes=scopes)[1]}")
        return c

    reader, writer, chatter = client("read"), client("write"), client("chat")
    assert reader.get("/api/v1/bots/").status_code == 200
    _error(reader.post("/api/v1/bots/", {"name": "x"}, format="json"), 403, "insufficient_scope")
    _error(writer.get("/api/v1/bots/"), 403, "insufficient_scope")
    assert writer.post("/api/v1/bots/", {"name": "New"}, format="json").status_code == 201
    _error(
        reader.post(f"/api/v1/bots/{bot.pk}/messages/", {"user": "u", "text": "hi"}, format="json"),
        403,
        "insufficient_scope",
    )
    _error(chatter.delete(f"/api/v1/bots/{bot.pk}/"), 403, "insufficient_scope")


def test_key_lifecycle_through_the_api_is_audited(api: Any, tenant: Any) -> None:
    from auditlog.models import LogEntry

    from switchboard.apikeys.models import ApiKey
    from switchboard.apikeys.services import api_key_authenticate

    created = api.post(
        "/api/v1/keys/", {"name": "CI", "scopes": ["read"], "expires_at": None}, format="json"
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["scopes"] == ["read"] and body["key"].startswith(f"sb_{body['prefix']}_")
    listed = api.get("/api/v1/keys/").json()["results"]
    assert all("key" not in item and "secret_hash" not in item for item in listed)
    assert api_key_authenticate(body["key"]) is not None
    assert api.delete(f"/api/v1/keys/{body['id']}/").status_code == 204
    assert api_key_authenticate(body["key"]) is None
    row = ApiKey.objects.get(pk=body["id"])
    actions = set(LogEntry.objects.get_for_object(row).values_list("action", flat=True))
    assert {LogEntry.Action.CREATE, LogEntry.Action.UPDATE} <= actions
    assert all("secret_hash" not in (e.changes or "") for e in LogEntry.objects.get_for_object(row))


def test_a_key_cannot_grant_scopes_it_lacks(tenant: Any, make_key: Any) -> None:
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_key(tenant, scopes=('write',))[1]}")
    response = client.post("/api/v1/keys/", {"name": "escalate", "scopes": ["chat"]}, format="json")
    _error(response, 403, "insufficient_scope")
    response = client.post("/api/v1/keys/", {"name": "ok", "scopes": ["write"]}, format="json")
    assert response.status_code == 201
    _error(
        client.post("/api/v1/keys/", {"name": "x", "scopes": ["root"]}, format="json"),
        400,
        "validation_error",
    )


# --- bots and connectors ----------------------------------------------------------------


def test_bot_crud(api: Any, tenant: Any) -> None:
    from switchboard.bots.models import Bot

    created = api.post(
        "/api/v1/bots/",
        {"name": "Support", "system_prompt": "Be kind.", "temperature": 0.2},
        format="json",
    )
    assert created.status_code == 201, created.content
    bot_id = created.json()["id"]
    assert Bot.objects.for_tenant(tenant).get(pk=bot_id).system_prompt == "Be kind."
    _error(api.post("/api/v1/bots/", {"name": "Support"}, format="json"), 400, "validation_error")
    error = _error(
        api.patch(f"/api/v1/bots/{bot_id}/", {"temperature": 9}, format="json"),
        400,
        "validation_error",
    )
    assert "temperature" in error["details"]
    assert (
        api.patch(f"/api/v1/bots/{bot_id}/", {"max_tokens": 99}, format="json").json()["max_tokens"]
        == 99
    )
    assert [b["name"] for b in api.get("/api/v1/bots/?name=supp").json()["results"]] == ["Support"]
    assert api.delete(f"/api/v1/bots/{bot_id}/").status_code == 204
    assert not Bot.objects.filter(pk=bot_id).exists()
    _error(api.get(f"/api/v1/bots/{bot_id}/"), 404, "not_found")


def test_the_licence_bot_limit_applies(api: Any, tenant: Any, licence_for: Any) -> None:
    licence_for(tenant, max_bots=1)
    assert api.post("/api/v1/bots/", {"name": "One"}, format="json").status_code == 201
    error = _error(
        api.post("/api/v1/bots/", {"name": "Two"}, format="json"), 400, "validation_error"
    )
    assert "bot" in str(error["details"]).lower()


def test_connector_secrets_are_write_only(api: Any, bot: Any) -> None:
    created = api.post(
        "/api/v1/connectors/",
        {
            "bot": str(bot.pk),
            "kind": "webhook",
            "name": "CRM",
            "callback_url": "https://crm.example.com/hook",
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["secret"].startswith("whsec_")
    assert body["ingress_path"] == f"/hooks/webhook/{body['id']}/"
    shown = api.get(f"/api/v1/connectors/{body['id']}/").json()
    assert "secret" not in shown and shown["has_secret"] is True
    assert body["secret"] not in api.get("/api/v1/connectors/").content.decode()
    rotated = api.post(f"/api/v1/connectors/{body['id']}/rotate-secret/").json()["secret"]
    assert rotated != body["secret"] and rotated.startswith("whsec_")
    patched = api.patch(
        f"/api/v1/connectors/{body['id']}/", {"kind": "dingtalk", "enabled": False}, format="json"
    ).json()
    assert patched["kind"] == "webhook" and patched["enabled"] is False  # kind is fixed


def test_connector_validation_errors_name_the_field(api: Any, bot: Any) -> None:
    error = _error(
        api.post(
            "/api/v1/connectors/",
            {"bot": str(bot.pk), "kind": "webhook", "name": "x", "callback_url": "not a url"},
            format="json",
        ),
        400,
        "validation_error",
    )
    assert "callback_url" in error["details"]
    error = _error(
        api.post(
            "/api/v1/connectors/",
            {"bot": str(bot.pk), "kind": "console", "name": "x"},
            format="json",
        ),
        400,
        "validation_error",
    )
    assert "kind" in error["details"]


def test_hidden_connectors_are_not_listed(api: Any, bot: Any) -> None:
    from switchboard.api.completions import api_connector

    api_connector(bot)
    assert api.get("/api/v1/connectors/").json()["results"] == []


# --- conversations and messages ---------------------------------------------------------


def _conversation(bot: Any, user: str, turns: int) -> Any:
    from connectors.base import InboundMessage
    from switchboard.api.completions import api_connector
    from switchboard.conversations.services import message_receive

    connector = api_connector(bot)
    message = None
    for turn in range(turns):
        message = message_receive(
            connector=connector,
            inbound=InboundMessage(
                channel="api",
                provider_message_id=uuid.uuid4().hex,
                user_id=user,
                conversation_key=f"user:{user}",
                text=f"{user} turn {turn}",
            ),
            generate=False,
        ).message
    return message.conversation  # type: ignore[union-attr]


def test_conversations_and_messages_filter_and_paginate(api: Any, bot: Any) -> None:
    alice = _conversation(bot, "alice", 5)
    _conversation(bot, "bob", 1)
    listed = api.get("/api/v1/conversations/?user=alice").json()
    assert [c["id"] for c in listed["results"]] == [alice.pk]
    assert listed["results"][0]["end_user"]["external_id"] == "alice"
    first = api.get(f"/api/v1/conversations/{alice.pk}/messages/?page_size=2").json()
    assert len(first["results"]) == 2 and first["next"]
    texts = [m["text"] for m in first["results"]]
    page = first
    while page["next"]:
        page = api.get(page["next"]).json()
        texts += [m["text"] for m in page["results"]]
    assert sorted(texts) == [f"alice turn {i}" for i in range(5)]
    assert texts[0] == "alice turn 4"  # newest first
    inbound = api.get(f"/api/v1/messages/?conversation={alice.pk}&direction=in").json()
    assert len(inbound["results"]) == 5
    future = (timezone.now() + timedelta(hours=1)).isoformat()
    assert api.get("/api/v1/messages/", {"since": future}).json()["results"] == []
    _error(api.get("/api/v1/messages/?since=yesterday"), 400, "validation_error")


# --- usage, MAU, licence ----------------------------------------------------------------


def test_usage_mau_and_licence(api: Any, tenant: Any, bot: Any) -> None:
    from switchboard.metering.rollups import rollups_update

    _conversation(bot, "erin", 1)
    from switchboard.conversations.models import Message
    from switchboard.metering import ledger

    inbound = Message.objects.for_tenant(tenant).get()
    ledger.usage_record(
        inbound=inbound,
        bot=bot,
        outcome="ok",
        prompt_tokens=30,
        completion_tokens=12,
        at=timezone.now() - timedelta(minutes=5),
    )
    rollups_update(now=timezone.now() + timedelta(minutes=5))
    by_bot = api.get("/api/v1/usage/?group_by=bot").json()
    assert by_bot["rows"][0]["bot_name"] == bot.name
    assert by_bot["rows"][0]["prompt_tokens"] == 30
    day = api.get("/api/v1/usage/?group_by=day").json()["rows"]
    assert sum(r["completion_tokens"] for r in day) == 12
    csv = api.get("/api/v1/usage/?group_by=day&output=csv")
    assert csv["Content-Type"].startswith("text/csv")
    assert b"".join(csv.streaming_content).decode().splitlines()[0].startswith("period,")
    _error(api.get("/api/v1/usage/?group_by=week"), 400, "validation_error")
    _error(api.get("/api/v1/usage/?start=2026-13-01"), 400, "validation_error")
    mau = api.get("/api/v1/mau/").json()
    assert mau["current"]["active"] == 1 and mau["limit"] == 100
    licence = api.get("/api/v1/licence/").json()
    assert licence["source"] == "free tier" and licence["tokens_used_this_month"] == 42
    assert licence["mau_this_month"] == 1


# --- errors -----------------------------------------------------------------------------


def test_errors_have_one_shape(api: Any, bot: Any) -> None:
    _error(api.get("/api/v1/nothing-here/"), 404, "not_found")
    _error(api.get(f"/api/v1/bots/{uuid.uuid4()}/"), 404, "not_found")
    _error(api.get("/api/v1/bots/not-a-uuid/"), 404, "not_found")
    _error(
        api.post("/api/v1/bots/", b"{broken", content_type="application/json"),
        400,
        "malformed_json",
    )
    _error(
        api.post("/api/v1/bots/", b"name=x", content_type="application/x-www-form-urlencoded"),
        415,
        "unsupported_media_type",
    )
    _error(api.put("/api/v1/usage/"), 405, "method_not_allowed")


def test_oversized_bodies_are_refused(api: Any, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api.post("/api/v1/bots/", {"name": "x" * 2000}, format="json")
    _error(response, 413, "request_too_large")


def test_throttling_answers_429_with_retry_after(api: Any, monkeypatch: Any) -> None:
    from rest_framework.throttling import SimpleRateThrottle

    from switchboard.api.auth import ApiKeyThrottle

    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"api_key": "3/min"})
    monkeypatch.setattr(ApiKeyThrottle, "THROTTLE_RATES", {"api_key": "3/min"})
    for _ in range(3):
        assert api.get("/api/v1/bots/").status_code == 200
    response = api.get("/api/v1/bots/")
    _error(response, 429, "rate_limited")
    assert int(response["Retry-After"]) >= 1


def test_schema_and_docs_are_served_without_a_cdn(client: Any) -> None:
    schema = client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/bots/{id}/messages/" in paths
    docs = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in docs
    assert "cdn" not in docs.lower() and "unpkg" not in docs.lower()
