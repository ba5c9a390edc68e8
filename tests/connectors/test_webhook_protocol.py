"""The webhook connector against the Standard Webhooks vectors (PROTOCOLS.md §F.6)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import pytest

from connectors.base import InvalidSignature, MalformedPayload, PayloadTooLarge
from connectors.webhook import generate_secret, parse_inbound, sign_headers, verify_and_parse

VECTORS_FILE = Path(__file__).resolve().parents[3] / "shared" / "protocols" / "vectors.json"
# The vectors as published, so the tests also run where shared/ is absent.
VECTORS = {
    "official": {
        "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "timestamp": 1614265330,
        "payload": '{"test": 2432232314}',
        "signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    },
    "ours": {
        "secret": "whsec_c3RhbmRhcmQtd2ViaG9va3MtdGVzdC1rZXktMzJieXQ=",
        "id": "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
        "timestamp": 1700000000,
        "payload": '{"type":"chat.message","data":{"text":"hi"}}',
        "signature": "v1,t87MjnFOgtCLX2Muo7/WtJjqbmnBNxMhgM0+rxMa+8E=",
    },
}


def test_embedded_vectors_match_the_shared_protocol_file():
    if not VECTORS_FILE.exists():
        pytest.skip("shared/protocols is not beside this checkout")
    assert json.loads(VECTORS_FILE.read_text())["E3_standard_webhooks"] == VECTORS


@pytest.mark.parametrize("name", ["official", "ours"])
def test_signing_reproduces_the_vectors(name):
    v = VECTORS[name]
    at = datetime.fromtimestamp(v["timestamp"], tz=UTC)
    headers = sign_headers(secret=v["secret"], event_id=v["id"], body=v["payload"], at=at)
    assert headers == {
        "webhook-id": v["id"],
        "webhook-timestamp": str(v["timestamp"]),
        "webhook-signature": v["signature"],
    }


def _at(ts: int):
    return mock.patch(
        "standardwebhooks.webhooks.datetime",
        mock.Mock(
            now=lambda tz=None: datetime.fromtimestamp(ts, tz=UTC),
            fromtimestamp=datetime.fromtimestamp,
        ),
    )


def _headers(v, signature=None):
    return {
        "webhook-id": v["id"],
        "webhook-timestamp": str(v["timestamp"]),
        "webhook-signature": signature or v["signature"],
    }


def test_second_of_two_signatures_valid_is_accepted():
    v = VECTORS["ours"]
    body = json.dumps({"message_id": "m", "user_id": "u", "text": "hi"})
    at = datetime.fromtimestamp(v["timestamp"], tz=UTC)
    good = sign_headers(secret=v["secret"], event_id=v["id"], body=body, at=at)
    rotated = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= " + good["webhook-signature"]
    with _at(v["timestamp"] + 10):
        inbound = verify_and_parse(
            secret=v["secret"],
            body=body.encode(),
            headers={**good, "webhook-signature": rotated},
            max_bytes=1000,
        )
    assert inbound.provider_message_id == "m"


def test_vector_signature_verifies_and_a_one_byte_change_does_not():
    v = VECTORS["ours"]
    with _at(v["timestamp"]), pytest.raises(MalformedPayload):
        # Signature fine, but the vector's body is not a chat message for us.
        verify_and_parse(
            secret=v["secret"], body=v["payload"].encode(), headers=_headers(v), max_bytes=1000
        )
    with _at(v["timestamp"]), pytest.raises(InvalidSignature):
        verify_and_parse(
            secret=v["secret"],
            body=v["payload"].replace("hi", "ho").encode(),
            headers=_headers(v),
            max_bytes=1000,
        )


@pytest.mark.parametrize("offset, ok", [(299, True), (-299, True), (301, False), (-301, False)])
def test_tolerance_is_five_minutes_both_ways(offset, ok):
    v = VECTORS["ours"]
    body = json.dumps({"message_id": "m", "user_id": "u", "text": "hi"})
    at = datetime.fromtimestamp(v["timestamp"], tz=UTC)
    headers = sign_headers(secret=v["secret"], event_id=v["id"], body=body, at=at)
    with _at(v["timestamp"] + offset):
        if ok:
            verify_and_parse(
                secret=v["secret"], body=body.encode(), headers=headers, max_bytes=1000
            )
        else:
            with pytest.raises(InvalidSignature, match="tolerance"):
                verify_and_parse(
                    secret=v["secret"], body=body.encode(), headers=headers, max_bytes=1000
                )


def test_oversized_body_is_refused_before_verification():
    with pytest.raises(PayloadTooLarge):
        verify_and_parse(secret=generate_secret(), body=b"x" * 11, headers={}, max_bytes=10)


def test_generated_secrets_are_distinct_and_well_formed():
    import base64

    a, b = generate_secret(), generate_secret()
    assert a != b and a.startswith("whsec_")
    assert len(base64.b64decode(a.removeprefix("whsec_"))) == 32


def test_conversation_keys_cannot_collide_between_ids_and_users():
    by_id = parse_inbound(
        json.dumps({"message_id": "1", "user_id": "x", "text": "t", "conversation_id": "user:bob"})
    )
    by_user = parse_inbound(json.dumps({"message_id": "2", "user_id": "bob", "text": "t"}))
    assert by_id.conversation_key != by_user.conversation_key
