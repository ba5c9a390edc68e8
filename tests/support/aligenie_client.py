"""A test-only AliGenie platform: builds v1 TaskQuery bodies, encrypts them, posts them.

Bodies follow PROTOCOLS.md §D.1 (the field table and the community examples). Encryption
is what the vendor SDK's RSAUtil does: the UTF-8 JSON split into (modulus bytes - 11)
chunks, each RSA PKCS#1 v1.5 encrypted under the skill's public key, the blocks
concatenated and base64-encoded. The `queryMetaInfo` values are placeholders: the real
ones are UNKNOWN and the connector does not read them.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

PKCS1V15_OVERHEAD = 11


def generate_keypair(bits: int = 1024) -> tuple[str, str]:
    """A fresh (PKCS#8 private PEM, SubjectPublicKeyInfo public PEM) pair."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
    return private_pem, public_pem


def slot_entity(
    name: str,
    value: str,
    *,
    standard_value: str | None = None,
    parameter_id: int = 24076,
    created_ms: int = 1519698715983,
) -> dict[str, Any]:
    """One `slotEntities` item with the documented fields."""
    return {
        "intentParameterId": parameter_id,
        "intentParameterName": name,
        "originalValue": value,
        "standardValue": value if standard_value is None else standard_value,
        "slotNorm": value if standard_value is None else standard_value,
        "liveTime": 0,
        "createTimeStamp": created_ms,
        "fromContext": False,
        "score": 1.0,
        "slotSource": "TEXT",
        "slotName": name,
        "slotValue": value,
    }


def task_query(
    utterance: str,
    *,
    session_id: str | None = None,
    skill_id: int = 8973,
    skill_name: str = "美食管家",
    intent_id: int = 17063,
    intent_name: str = "点菜",
    slots: Sequence[dict[str, Any]] = (),
    user_open_id: str | None = "user-open-id-1",
    device_open_id: str = "device-open-id-1",
    request_id: str | None = None,
    token: str | None = None,
    is_test: bool | None = None,
    new_session: bool = True,
) -> dict[str, Any]:
    """A v1 TaskQuery. `user_open_id=None` leaves `requestData` out, as the online test does;
    `request_id=None` generates one, pass "" to leave it out."""
    session_id = session_id or str(uuid.uuid4())
    body: dict[str, Any] = {
        "sessionId": session_id,
        "utterance": utterance,
        "skillId": skill_id,
        "skillName": skill_name,
        "intentId": intent_id,
        "intentName": intent_name,
        "slotEntities": list(slots),
        "conversationRecords": [],
        "botId": 20866,
        "domainId": 15439,
        "device": {"deviceOpenId": device_open_id, "supportedFeatures": []},
        "skillSession": {"skillSessionId": session_id, "newSession": new_session, "attributes": {}},
    }
    if user_open_id is not None:
        body["requestData"] = {"userOpenId": user_open_id, "deviceOpenId": device_open_id}
    if request_id is None:
        request_id = f"{uuid.uuid4().hex[:17]}-{uuid.uuid4().int % 10**10}"
    if request_id:
        body["requestId"] = request_id
    if token is not None:
        body["token"] = token
    if is_test is not None:
        body["skillNluInfo"] = {"isNluLink": True, "invocationName": skill_name, "isTest": is_test}
    return body


def encrypt_query(
    query: dict[str, Any] | bytes,
    public_key_pem: str,
    *,
    source: str = "AliGenie",
    query_version: str = "1.0",
    security_mode: str = "RSA",
) -> dict[str, Any]:
    """The encrypted body: `{"queryMetaInfo": {...}, "securityQuery": base64(blocks)}`."""
    plaintext = (
        query
        if isinstance(query, bytes)
        else json.dumps(query, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    )
    key = serialization.load_pem_public_key(public_key_pem.encode("ascii"))
    if not isinstance(key, rsa.RSAPublicKey):
        raise TypeError("an RSA public key is required")
    chunk = (key.key_size + 7) // 8 - PKCS1V15_OVERHEAD
    blocks = [
        key.encrypt(plaintext[i : i + chunk], padding.PKCS1v15())
        for i in range(0, len(plaintext), chunk)
    ]
    return {
        "queryMetaInfo": {
            "source": source,
            "queryVersion": query_version,
            "securityMode": security_mode,
        },
        "securityQuery": base64.b64encode(b"".join(blocks)).decode("ascii"),
    }


def encode(body: dict[str, Any]) -> bytes:
    """The bytes the platform would post for `body`."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def post(url: str, body: dict[str, Any] | bytes, timeout: float = 5.0) -> httpx.Response:
    """POST a body to a skill webhook the way the platform does (JSON, UTF-8)."""
    content = body if isinstance(body, bytes) else encode(body)
    return httpx.post(
        url,
        content=content,
        headers={"Content-Type": "application/json;charset=UTF-8"},
        timeout=timeout,
    )
