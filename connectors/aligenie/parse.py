"""Inbound AliGenie v1 TaskQuery: size and shape checks, optional decryption, mapping.

AliGenie signs nothing (PROTOCOLS.md §D.1, "No HMAC or signature header was found"), so
a request is authenticated only by what the platform alone knows: the unguessable token in
our webhook URL (the ingress checks it), the skill id (`check_skill`) and, when the skill
has encryption turned on, our RSA public key (`securityQuery`, see `crypto.py`).

Required fields, decided here because the protocol does not say:
- `sessionId`: a non-empty string. Every documented example has it, and the conversation
  is keyed on it; without it a turn could not be tied to its dialogue.
- `utterance`: a string, possibly empty or absent. A launch/welcome turn can carry only
  an intent, so an empty utterance is accepted as long as `intentName` is set; a query with
  neither has nothing to answer and is refused.
- Everything else is optional, but when present it must have the documented type.

User identity: `requestData` (with `userOpenId`) is absent in the console's online test,
so the user falls back to `device.deviceOpenId` (or `requestData.deviceOpenId`), then to
`sessionId`. A turn then still belongs to a stable "user" for rate limits and history; the
fallbacks carry a prefix so a device or session id can never pass for a real user id.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from connectors.aligenie.crypto import decrypt_security_query, load_private_key
from connectors.base import InboundMessage, InvalidSignature, MalformedPayload, PayloadTooLarge

CHANNEL = "aligenie"
ID_MAX = 256
# A Java Long as JSON number, or as a digit string for gateways that quote 64-bit ids.
_LONG_STRING = re.compile(r"\d{1,19}")
_SLOT_VALUE_KEYS = ("standardValue", "originalValue", "slotValue")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class AliGenieQuery:
    """One v1 TaskQuery, validated. Absent strings are "", absent ids are None."""

    session_id: str
    utterance: str
    user_open_id: str
    device_open_id: str
    skill_id: int | None
    skill_name: str
    intent_id: int | None
    intent_name: str
    # (parameter name, value) in request order; value is standardValue, else
    # originalValue, else slotValue, so synonyms arrive normalised when the skill has them.
    slots: tuple[tuple[str, str], ...]
    request_id: str
    # The account-linking OAuth token: kept out of repr so it never lands in logs.
    token: str = field(repr=False)
    is_test: bool
    # The latest timestamp-like value in the body (slot createTimeStamp, sessionEntries
    # timeStamp), in ms; only used to tell apart identical turns when requestId is absent.
    timestamp_ms: int | None = None
    encrypted: bool = False

    @property
    def user_key(self) -> str:
        """The end user's id: userOpenId, else the device, else the session (see above)."""
        if self.user_open_id:
            return self.user_open_id
        if self.device_open_id:
            return f"device:{self.device_open_id}"
        return f"session:{self.session_id}"


def parse_query(raw: bytes, *, private_key_pem: str | None, max_bytes: int) -> AliGenieQuery:
    """Parse one request body. With a private key the connector requires encryption.

    Raises `PayloadTooLarge`, `MalformedPayload`, or `InvalidSignature` (ciphertext we
    cannot decrypt, or plaintext where encryption is required); a `private_key_pem` that
    is not a usable RSA key raises `ValueError`, since that is our misconfiguration.
    """
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"request body is larger than the limit of {max_bytes} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPayload("request body is not valid UTF-8") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedPayload(
            f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(body, dict):
        raise MalformedPayload("request body must be a JSON object (an AliGenie TaskQuery)")

    if "securityQuery" not in body:
        if private_key_pem:
            raise InvalidSignature(
                "this connector requires encrypted requests (a securityQuery body), but the "
                "request is plaintext: turn on encryption for the skill in the AliGenie "
                "console, or remove the connector's private key"
            )
        return _task_query(body, encrypted=False)

    if not private_key_pem:
        raise MalformedPayload(
            "request is encrypted (securityQuery), but encryption is not configured for this "
            "connector: add the skill's RSA private key, or turn encryption off in the "
            "AliGenie console"
        )
    security_query = body["securityQuery"]
    details: list[dict[str, str]] = []
    if not isinstance(security_query, str) or not security_query.strip():
        details.append({"field": "securityQuery", "message": "must be a non-empty string"})
    if body.get("queryMetaInfo") is not None and not isinstance(body["queryMetaInfo"], dict):
        details.append({"field": "queryMetaInfo", "message": "must be an object"})
    if details:
        fields = ", ".join(d["field"] for d in details)
        raise MalformedPayload(f"invalid encrypted request fields: {fields}", details=details)
    key = load_private_key(private_key_pem)
    return _task_query(decrypt_security_query(security_query, key), encrypted=True)


class _Fields:
    """Reads typed fields and collects every problem, so one answer lists them all."""

    def __init__(self) -> None:
        self.errors: list[dict[str, str]] = []

    def _fail(self, path: str, message: str) -> None:
        self.errors.append({"field": path, "message": message})

    def string(self, obj: dict[str, Any], key: str, path: str, *, max_len: int = 0) -> str:
        value = obj.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            self._fail(path, f"must be a string, got {_json_type(value)}")
            return ""
        value = value.strip()
        if max_len and len(value) > max_len:
            self._fail(path, f"must be at most {max_len} characters")
            return ""
        return value

    def long(self, obj: dict[str, Any], key: str, path: str) -> int | None:
        value = obj.get(key)
        if value is None or value == "":
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, str) and _LONG_STRING.fullmatch(value):
            return int(value)
        self._fail(path, f"must be a non-negative integer id, got {_json_type(value)}")
        return None

    def boolean(self, obj: dict[str, Any], key: str, path: str) -> bool | None:
        value = obj.get(key)
        if value is None or isinstance(value, bool):
            return value
        self._fail(path, f"must be true or false, got {_json_type(value)}")
        return None

    def object(self, obj: dict[str, Any], key: str, path: str) -> dict[str, Any]:
        value = obj.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self._fail(path, f"must be an object, got {_json_type(value)}")
            return {}
        return value

    def slots(self, obj: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        entities = obj.get("slotEntities")
        if entities is None:
            return ()
        if not isinstance(entities, list):
            self._fail("slotEntities", f"must be a list, got {_json_type(entities)}")
            return ()
        slots: list[tuple[str, str]] = []
        for i, entity in enumerate(entities):
            path = f"slotEntities[{i}]"
            if not isinstance(entity, dict):
                self._fail(path, f"must be an object, got {_json_type(entity)}")
                continue
            name = self.string(entity, "intentParameterName", f"{path}.intentParameterName")
            name = name or self.string(entity, "slotName", f"{path}.slotName")
            values = [self.string(entity, k, f"{path}.{k}") for k in _SLOT_VALUE_KEYS]
            value = next((v for v in values if v), "")
            # A slot with no name or no value says nothing the model could use.
            if name and value:
                slots.append((name, value))
        return tuple(slots)


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "null"


def _task_query(q: dict[str, Any], *, encrypted: bool) -> AliGenieQuery:
    f = _Fields()
    session_id = f.string(q, "sessionId", "sessionId", max_len=ID_MAX)
    if not session_id and not f.errors:
        f.errors.append({"field": "sessionId", "message": "is required (a non-empty string)"})
    request_data = f.object(q, "requestData", "requestData")
    device = f.object(q, "device", "device")
    nlu = f.object(q, "skillNluInfo", "skillNluInfo")
    query = AliGenieQuery(
        session_id=session_id,
        utterance=f.string(q, "utterance", "utterance"),
        user_open_id=f.string(request_data, "userOpenId", "requestData.userOpenId", max_len=ID_MAX),
        device_open_id=(
            f.string(device, "deviceOpenId", "device.deviceOpenId", max_len=ID_MAX)
            or f.string(request_data, "deviceOpenId", "requestData.deviceOpenId", max_len=ID_MAX)
        ),
        skill_id=f.long(q, "skillId", "skillId"),
        skill_name=f.string(q, "skillName", "skillName"),
        intent_id=f.long(q, "intentId", "intentId"),
        intent_name=f.string(q, "intentName", "intentName"),
        slots=f.slots(q),
        request_id=f.string(q, "requestId", "requestId", max_len=ID_MAX),
        token=f.string(q, "token", "token"),
        is_test=bool(f.boolean(nlu, "isTest", "skillNluInfo.isTest")),
        timestamp_ms=_latest_timestamp(q),
        encrypted=encrypted,
    )
    if f.errors:
        fields = ", ".join(dict.fromkeys(e["field"] for e in f.errors))
        raise MalformedPayload(f"invalid or missing TaskQuery fields: {fields}", details=f.errors)
    if not query.utterance and not query.intent_name:
        raise MalformedPayload(
            "the query has neither an utterance nor an intentName: nothing to answer",
            details=[{"field": "utterance", "message": "required when intentName is empty"}],
        )
    return query


def _latest_timestamp(q: dict[str, Any]) -> int | None:
    # Legacy, loosely typed fields: read what is usable and never reject on them.
    found: list[object] = []
    entities = q.get("slotEntities")
    for entity in entities if isinstance(entities, list) else []:
        if isinstance(entity, dict):
            found.append(entity.get("createTimeStamp"))
    entries = q.get("sessionEntries")
    for entry in entries.values() if isinstance(entries, dict) else []:
        if isinstance(entry, dict):
            found.append(entry.get("timeStamp"))
    stamps = [t for t in found if isinstance(t, int) and not isinstance(t, bool) and t > 0]
    return max(stamps) if stamps else None


def prompt_text(q: AliGenieQuery) -> str:
    """The model's input: the utterance, then one line naming the intent and slots.

    Format: `<utterance>\\n[intent: <intentName>; <slot>=<value>; ...]`. The bracket line
    is left out when there is neither intent nor slot, and the utterance line when it is
    empty. AliGenie's NLU has already understood the request; handing that to the model
    keeps it from re-guessing what the platform resolved (e.g. a normalised slot value).
    """
    parts = [f"intent: {_one_line(q.intent_name)}"] if q.intent_name else []
    parts += [f"{_one_line(name)}={_one_line(value)}" for name, value in q.slots]
    lines = [q.utterance] if q.utterance else []
    if parts:
        lines.append("[" + "; ".join(parts) + "]")
    return "\n".join(lines)


def _one_line(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def provider_message_id(q: AliGenieQuery) -> str:
    """requestId when present, else a stable hash of what identifies the turn.

    AliGenie's retry semantics are UNKNOWN (PROTOCOLS.md §D.1): we cannot tell whether a
    retry repeats requestId, or whether it is sent at all. Without it we dedupe on the
    session, utterance, intent, slots and the body's latest timestamp, so a verbatim retry
    maps to the same id while a new turn in the session (new words, or new timestamps)
    does not. Two identical turns without any timestamp would collapse into one.
    """
    if q.request_id:
        return q.request_id
    material = [q.session_id, q.utterance, q.intent_name, [list(s) for s in q.slots]]
    material.append(q.timestamp_ms)
    digest = hashlib.sha256(
        json.dumps(material, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    ).hexdigest()
    # The prefix keeps a derived id from ever equalling a real requestId.
    return f"sha256:{digest[:40]}"


def to_inbound(q: AliGenieQuery) -> InboundMessage:
    return InboundMessage(
        channel=CHANNEL,
        provider_message_id=provider_message_id(q),
        user_id=q.user_key,
        conversation_key=f"session:{q.session_id}",
        text=prompt_text(q),
        # The reply is the synchronous HTTP response; this is what building it (an
        # ASK_INF needs the request's intentId) and the delivery log need.
        reply_handle={
            "session_id": q.session_id,
            "intent_id": q.intent_id,
            "intent_name": q.intent_name,
            "skill_id": q.skill_id,
            "request_id": q.request_id,
        },
    )


def check_skill(q: AliGenieQuery, *, expected_skill_id: int | None) -> None:
    """Refuse a query for another skill (401).

    AliGenie signs nothing, so the secret URL token and the skill id are the
    authentication: a request naming a different skill is not from our skill. With no
    expected id configured there is nothing to compare and every skill is accepted.
    """
    if expected_skill_id is None:
        return
    if q.skill_id is None:
        raise InvalidSignature(
            f"the query has no skillId; this connector only accepts skill {expected_skill_id}",
            details=[{"field": "skillId", "message": "is required by this connector"}],
        )
    if q.skill_id != expected_skill_id:
        raise InvalidSignature(
            f"the query is for skill {q.skill_id}, but this connector belongs to skill "
            f"{expected_skill_id}",
            details=[{"field": "skillId", "message": f"expected {expected_skill_id}"}],
        )
