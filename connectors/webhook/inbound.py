"""Inbound signed webhooks: verify on the raw bytes, then parse.

Signature checking is the `standardwebhooks` reference library (HMAC-SHA256 over
`id.timestamp.body`, constant-time compare, every `v1` entry tried so senders can rotate
secrets, ±5 minute timestamp tolerance). Replays inside the tolerance window carry the
same `message_id`, which the platform de-duplicates.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from connectors.base import InboundMessage, InvalidSignature, MalformedPayload, PayloadTooLarge

CHANNEL = "webhook"
_ID_MAX = 200


class WebhookPayload(BaseModel):
    """The JSON body a tenant's system posts to its webhook connector."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    message_id: str = Field(min_length=1, max_length=_ID_MAX)
    user_id: str = Field(min_length=1, max_length=_ID_MAX)
    text: str = Field(min_length=1, max_length=32_000)
    conversation_id: str | None = Field(default=None, min_length=1, max_length=_ID_MAX)
    user_name: str = Field(default="", max_length=200)


def verify_and_parse(
    *, secret: str, body: bytes, headers: Mapping[str, str], max_bytes: int
) -> InboundMessage:
    text = decode_body(body, max_bytes=max_bytes)
    _verify(secret=secret, text=text, headers=headers)
    return parse_inbound(text)


def decode_body(body: bytes, *, max_bytes: int) -> str:
    """Size check, then strict UTF-8: the steps every verification profile runs first."""
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"request body is larger than the limit of {max_bytes} bytes")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPayload("request body is not valid UTF-8") from None


def verify_standard(*, secret: str, text: str, headers: Mapping[str, str]) -> str:
    """Standard Webhooks verification; returns `webhook-id`, which the signature covers."""
    _verify(secret=secret, text=text, headers=headers)
    # Lower-cased the way the library does it (last spelling wins), so the id returned is
    # the one that was verified even if a request repeats the header in another case.
    return {k.lower(): v for k, v in headers.items()}["webhook-id"]


def _verify(*, secret: str, text: str, headers: Mapping[str, str]) -> None:
    try:
        Webhook(secret).verify(text, dict(headers), json_parse=False)
    except WebhookVerificationError as exc:
        raise InvalidSignature(_explain(str(exc))) from None
    except (ValueError, binascii.Error):
        # The reference library assumes well-formed `version,base64` entries; a mangled
        # header surfaces as an unpacking or base64 error.
        raise InvalidSignature(
            "webhook-signature header is malformed: expected space-separated 'v1,<base64>'"
        ) from None


def _explain(reason: str) -> str:
    explanations = {
        "Missing required headers": (
            "missing signature headers: webhook-id, webhook-timestamp and "
            "webhook-signature are all required"
        ),
        "Invalid Signature Headers": "webhook-timestamp is not a unix time in seconds",
        "Message timestamp too old": (
            "webhook-timestamp is outside the 5 minute tolerance (too old): "
            "check the sender's clock, or this is a replay"
        ),
        "Message timestamp too new": (
            "webhook-timestamp is outside the 5 minute tolerance (in the future): "
            "check the sender's clock"
        ),
        "No matching signature found": (
            "signature does not match: check the connector secret and that the body is "
            "sent exactly as signed"
        ),
    }
    return explanations.get(reason, f"signature verification failed: {reason}")


def parse_inbound(text: str) -> InboundMessage:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedPayload(f"request body is not valid JSON: {exc.msg} at {exc.pos}") from None
    if not isinstance(raw, dict):
        raise MalformedPayload("request body must be a JSON object")
    try:
        payload = WebhookPayload.model_validate(raw)
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in err["loc"]) or "body", "message": err["msg"]}
            for err in exc.errors()
        ]
        fields = ", ".join(d["field"] for d in details)
        raise MalformedPayload(f"invalid or missing fields: {fields}", details=details) from None
    return InboundMessage(
        channel=CHANNEL,
        provider_message_id=payload.message_id,
        user_id=payload.user_id,
        user_name=payload.user_name,
        # Without a conversation id, each end user has one running conversation. The
        # prefixes keep a caller's id from ever colliding with a per-user default key.
        conversation_key=(
            f"conv:{payload.conversation_id}"
            if payload.conversation_id
            else f"user:{payload.user_id}"
        ),
        text=payload.text,
        reply_handle={"conversation_id": payload.conversation_id},
    )
