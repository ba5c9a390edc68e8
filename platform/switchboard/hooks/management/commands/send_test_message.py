from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
from django.core.management.base import BaseCommand, CommandError, CommandParser

from connectors import dingtalk, webhook
from connectors.aligenie import encrypt_query, public_key_pem
from switchboard.bots.models import Connector
from switchboard.bots.services import connector_ingress_path

# Headers and body of one provider request.
Built = tuple[dict[str, str], bytes]


class Command(BaseCommand):
    help = (
        "Send a correctly signed test message to a connector's ingress, exactly as its "
        "provider would (Standard/Stripe/GitHub-signed webhook, DingTalk callback with "
        "timestamp/sign headers, AliGenie TaskQuery, encrypted when the connector has a "
        "key), and print the answer. Use it to check an installation by hand."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("text", help="What the end user says.")
        parser.add_argument("--connector", required=True, help="Connector id (UUID).")
        parser.add_argument(
            "--base-url",
            default="http://127.0.0.1:8000",
            help="Where the platform's web server listens.",
        )
        parser.add_argument("--user", default="test-user", help="End-user id to send as.")
        parser.add_argument(
            "--conversation", default="", help="Conversation id (webhook) or session id (AliGenie)."
        )
        parser.add_argument("--timeout", type=float, default=15.0)

    def handle(self, *args: Any, **options: Any) -> None:
        connector = Connector.objects.filter(pk=_uuid(options["connector"])).first()
        if connector is None:
            raise CommandError(f"no connector {options['connector']}")
        path = connector_ingress_path(connector)
        if connector.kind == Connector.Kind.CONSOLE:
            raise CommandError(
                "this is the console's test-chat connector: use the console's Test chat page"
            )
        if not path:
            raise CommandError(
                "this DingTalk connector is in Stream mode: messages arrive over the Stream "
                "connection (`manage.py dingtalk_stream`), not at an HTTP URL"
            )
        url = options["base_url"].rstrip("/") + path
        build = {
            Connector.Kind.WEBHOOK: _webhook_request,
            Connector.Kind.DINGTALK: _dingtalk_request,
            Connector.Kind.ALIGENIE: _aligenie_request,
        }[Connector.Kind(connector.kind)]
        headers, body = build(connector, options)
        headers.setdefault("content-type", "application/json")
        self.stdout.write(f"POST {url}")
        try:
            response = httpx.post(url, content=body, headers=headers, timeout=options["timeout"])
        except httpx.HTTPError as exc:
            raise CommandError(f"cannot reach {url}: {exc}") from exc
        self.stdout.write(f"HTTP {response.status_code}")
        self.stdout.write(response.text)
        if response.status_code >= 300:
            raise CommandError("the connector refused the test message (see above)")


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise CommandError(f"{value!r} is not a connector id (a UUID)") from None


def _webhook_request(connector: Connector, options: dict[str, Any]) -> Built:
    message_id = f"test-{uuid.uuid4().hex[:12]}"
    payload: dict[str, Any] = {
        "message_id": message_id,
        "user_id": options["user"],
        "text": options["text"],
    }
    if options["conversation"]:
        payload["conversation_id"] = options["conversation"]
    body = json.dumps(payload, ensure_ascii=False)
    headers = webhook.sign(
        webhook.Profile(connector.verification_profile),
        secret=connector.secret,
        body=body,
        event_id=f"msg_{message_id}",
    )
    return headers, body.encode()


def _dingtalk_request(connector: Connector, options: dict[str, Any]) -> Built:
    now_ms = int(time.time() * 1000)
    body = {
        "msgtype": "text",
        "text": {"content": options["text"]},
        "msgId": f"test-{uuid.uuid4().hex}",
        "createAt": now_ms,
        "conversationType": "1",
        "conversationId": options["conversation"] or f"cid-test-{options['user']}",
        "senderId": options["user"],
        "senderStaffId": options["user"],
        "senderNick": options["user"],
        "robotCode": connector.robot_code,
        "chatbotCorpId": connector.corp_id,
        # A test message has no real DingTalk session: the reply goes out through the
        # robot OpenAPI to senderStaffId.
        "sessionWebhook": "",
        "sessionWebhookExpiredTime": 0,
    }
    timestamp = str(now_ms)
    headers = {"timestamp": timestamp, "sign": dingtalk.compute_sign(timestamp, connector.secret)}
    return headers, json.dumps(body, ensure_ascii=False).encode()


def _aligenie_request(connector: Connector, options: dict[str, Any]) -> Built:
    query = {
        "sessionId": options["conversation"] or f"test-session-{uuid.uuid4().hex[:8]}",
        "utterance": options["text"],
        "skillId": connector.skill_id,
        "intentName": "test",
        "requestId": f"test-{uuid.uuid4().hex}",
        "requestData": {"userOpenId": options["user"]},
        "slotEntities": [],
    }
    raw = json.dumps(query, ensure_ascii=False).encode()
    if not connector.private_key:
        return {}, raw
    return {}, json.dumps(encrypt_query(raw, public_key_pem(connector.private_key))).encode()
