"""Signature profiles against the Stripe, GitHub and Standard vectors (PROTOCOLS.md §F.4-F.6)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import pytest

from connectors.base import InvalidSignature, MalformedPayload, PayloadTooLarge
from connectors.webhook import Profile, sign_headers, verify_and_parse_profile
from connectors.webhook.profiles import verify

VECTORS_FILE = Path(__file__).resolve().parents[3] / "shared" / "protocols" / "vectors.json"
STRIPE = {
    "secret": "whsec_test_5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH",
    "timestamp": 1700000000,
    "payload": '{"id":"evt_test_webhook","object":"event","type":"payment_intent.succeeded"}',
    "signed_payload": (
        '1700000000.{"id":"evt_test_webhook","object":"event","type":"payment_intent.succeeded"}'
    ),
    "header": "t=1700000000,v1=4f7bfa9dbb315a2959e2de573bf506a1eda114e97c9c076629d667abf7bb5b9f",
}
GITHUB = {
    "official": {
        "secret": "It's a Secret to Everybody",
        "payload": "Hello, World!",
        "header": "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
    },
    "ours": {
        "secret": "gh-webhook-test-secret",
        "payload": '{"zen":"Keep it logically awesome.","hook_id":123456}',
        "header": "sha256=0d774970dd0cc5c4a86a1fd375d2e93af6a7558bd9c2c150f9a7b39a930ec691",
    },
}
STANDARD = {
    "secret": "whsec_c3RhbmRhcmQtd2ViaG9va3MtdGVzdC1rZXktMzJieXQ=",
    "id": "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
    "timestamp": 1700000000,
    "payload": '{"type":"chat.message","data":{"text":"hi"}}',
    "signature": "v1,t87MjnFOgtCLX2Muo7/WtJjqbmnBNxMhgM0+rxMa+8E=",
}
CHAT = json.dumps({"message_id": "m-1", "user_id": "u-1", "text": "hello"}).encode()
STRIPE_SIG = STRIPE["header"].split("v1=")[1]


def test_embedded_vectors_match_the_shared_protocol_file():
    if not VECTORS_FILE.exists():
        pytest.skip("shared/protocols is not beside this checkout")
    shared = json.loads(VECTORS_FILE.read_text())
    assert shared["E1_stripe"] == STRIPE
    assert shared["E2_github"] == GITHUB
    for key in ("secret", "id", "timestamp", "payload", "signature"):
        assert shared["E3_standard_webhooks"]["ours"][key] == STANDARD[key]


def _stripe(header: str, *, now: float, body: bytes | None = None, **kw):
    return verify(
        Profile.STRIPE,
        secret=STRIPE["secret"],
        body=STRIPE["payload"].encode() if body is None else body,
        headers={"Stripe-Signature": header},
        now=now,
        **kw,
    )


def _stripe_header(secret: str, body: bytes, t: int) -> str:
    sig = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={sig}"


def _github_header(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- Stripe (§F.4) ---


@pytest.mark.parametrize("now", [1700000000, 1700000299, 1700000300])
def test_stripe_vector_is_accepted_within_tolerance(now):
    assert _stripe(STRIPE["header"], now=now) is None  # Stripe's id is in the body


def test_stripe_vector_is_rejected_once_too_old():
    with pytest.raises(InvalidSignature, match="older than the 300 s tolerance"):
        _stripe(STRIPE["header"], now=1700000301)


def test_stripe_tolerance_is_configurable():
    _stripe(STRIPE["header"], now=1700000301, tolerance_s=600)
    with pytest.raises(InvalidSignature, match="60 s"):
        _stripe(STRIPE["header"], now=1700000061, tolerance_s=60)
    with pytest.raises(ValueError, match="positive"):
        _stripe(STRIPE["header"], now=1700000000, tolerance_s=0)


def test_stripe_future_timestamps_are_accepted_like_stripes_sdk():
    # Documented in profiles.py: Stripe checks only the past; dedupe covers the rest.
    assert _stripe(STRIPE["header"], now=1700000000 - 86_400) is None


def test_stripe_secret_is_used_verbatim_with_its_prefix():
    header = _stripe_header(STRIPE["secret"].removeprefix("whsec_"), STRIPE["payload"].encode(), 1)
    with pytest.raises(InvalidSignature, match="whsec_ prefix included"):
        _stripe(header, now=1)


def test_stripe_any_v1_matches_so_secrets_can_rotate():
    header = f"t=1700000000,v1={'0' * 64},v1={STRIPE_SIG}"
    assert _stripe(header, now=1700000000) is None
    header = f"t=1700000000,v1={STRIPE_SIG},v1={'f' * 64}"
    assert _stripe(header, now=1700000000) is None


def test_stripe_v0_is_ignored():
    # A valid v0 alongside does not matter...
    assert _stripe(f"t=1700000000,v0={STRIPE_SIG},v1={STRIPE_SIG}", now=1700000000) is None
    # ...and a v0 alone is not accepted, even carrying the right digest.
    with pytest.raises(InvalidSignature, match="no v1"):
        _stripe(f"t=1700000000,v0={STRIPE_SIG}", now=1700000000)


def test_stripe_rejects_a_tampered_body_or_timestamp():
    with pytest.raises(InvalidSignature, match="does not match"):
        _stripe(STRIPE["header"], now=1700000000, body=STRIPE["payload"].encode() + b" ")
    with pytest.raises(InvalidSignature, match="does not match"):
        _stripe(STRIPE["header"].replace("t=1700000000", "t=1700000001"), now=1700000000)


@pytest.mark.parametrize(
    "header, message",
    [
        ("", "not 'key=value'"),
        ("garbage", "not 'key=value'"),
        (f"v1={STRIPE_SIG}", "no t= timestamp"),
        ("t=1700000000", "no v1= signature"),
        (f"t=abc,v1={STRIPE_SIG}", "not a unix time"),
        (f"t=-1700000000,v1={STRIPE_SIG}", "not a unix time"),
        (f"t=1700000000,t=1700000000,v1={STRIPE_SIG}", "more than one t="),
        (f"t=1700000000,,v1={STRIPE_SIG}", "not 'key=value'"),
        (f"t=1700000000,=x,v1={STRIPE_SIG}", "not 'key=value'"),
        ("t=1700000000,v1=é", "does not match"),
        ("t=1700000000,v1=", "does not match"),
    ],
)
def test_stripe_malformed_headers_are_clear_errors(header, message):
    with pytest.raises(InvalidSignature, match=message):
        _stripe(header, now=1700000000)


def test_stripe_missing_header_and_case_insensitive_lookup():
    with pytest.raises(InvalidSignature, match="missing Stripe-Signature"):
        verify(Profile.STRIPE, secret="s", body=b"{}", headers={}, now=0)
    ok = verify(
        Profile.STRIPE,
        secret=STRIPE["secret"],
        body=STRIPE["payload"].encode(),
        headers={"stripe-signature": STRIPE["header"]},
        now=1700000000,
    )
    assert ok is None


# --- GitHub (§F.5) ---


@pytest.mark.parametrize("name", ["official", "ours"])
def test_github_vectors_verify_and_return_the_delivery_id(name):
    v = GITHUB[name]
    headers = {"X-Hub-Signature-256": v["header"], "X-GitHub-Delivery": "72d3162e-cc78"}
    # No timestamp in the scheme: `now` is irrelevant, the vector verifies at any time.
    got = verify(Profile.GITHUB, secret=v["secret"], body=v["payload"].encode(), headers=headers)
    assert got == "72d3162e-cc78"


def test_github_without_delivery_header_returns_none():
    v = GITHUB["official"]
    headers = {"x-hub-signature-256": v["header"]}
    assert (
        verify(Profile.GITHUB, secret=v["secret"], body=b"Hello, World!", headers=headers) is None
    )


@pytest.mark.parametrize(
    "headers, message",
    [
        ({}, "missing X-Hub-Signature-256"),
        ({"X-Hub-Signature": "sha1=abc"}, "legacy SHA-1"),
        ({"X-Hub-Signature-256": "sha1=" + "0" * 64}, "expected 'sha256=<hex>'"),
        ({"X-Hub-Signature-256": "SHA256=" + "0" * 64}, "expected 'sha256=<hex>'"),
        ({"X-Hub-Signature-256": GITHUB["official"]["header"].removeprefix("sha256=")},
         "expected 'sha256=<hex>'"),
        ({"X-Hub-Signature-256": "sha256=" + "0" * 64}, "does not match"),
        ({"X-Hub-Signature-256": "sha256=ü"}, "does not match"),
    ],
)  # fmt: skip
def test_github_bad_headers_are_refused(headers, message):
    with pytest.raises(InvalidSignature, match=message):
        verify(
            Profile.GITHUB,
            secret=GITHUB["official"]["secret"],
            body=b"Hello, World!",
            headers=headers,
        )


def test_github_rejects_a_tampered_body_and_the_wrong_secret():
    v = GITHUB["ours"]
    headers = {"X-Hub-Signature-256": v["header"]}
    with pytest.raises(InvalidSignature):
        verify(
            Profile.GITHUB, secret=v["secret"], body=v["payload"].encode() + b"\n", headers=headers
        )
    with pytest.raises(InvalidSignature):
        verify(Profile.GITHUB, secret="other", body=v["payload"].encode(), headers=headers)


# --- Standard Webhooks (§F.6), unchanged behaviour through the profile API ---


def _at(ts: int):
    return mock.patch(
        "standardwebhooks.webhooks.datetime",
        mock.Mock(
            now=lambda tz=None: datetime.fromtimestamp(ts, tz=UTC),
            fromtimestamp=datetime.fromtimestamp,
        ),
    )


def _standard_headers(signature: str = STANDARD["signature"]) -> dict[str, str]:
    return {
        "webhook-id": STANDARD["id"],
        "webhook-timestamp": str(STANDARD["timestamp"]),
        "webhook-signature": signature,
    }


def test_standard_vector_verifies_and_returns_the_webhook_id():
    with _at(STANDARD["timestamp"]):
        got = verify(
            Profile.STANDARD,
            secret=STANDARD["secret"],
            body=STANDARD["payload"].encode(),
            headers=_standard_headers(),
        )
    assert got == STANDARD["id"]


def test_standard_vector_through_verify_and_parse_profile():
    with _at(STANDARD["timestamp"]), pytest.raises(MalformedPayload):
        # Signature fine, but the vector's body is not a chat message for us.
        verify_and_parse_profile(
            Profile.STANDARD,
            secret=STANDARD["secret"],
            body=STANDARD["payload"].encode(),
            headers=_standard_headers(),
            max_bytes=1000,
        )
    with _at(STANDARD["timestamp"]), pytest.raises(InvalidSignature, match="does not match"):
        verify_and_parse_profile(
            Profile.STANDARD,
            secret=STANDARD["secret"],
            body=STANDARD["payload"].replace("hi", "ho").encode(),
            headers=_standard_headers(),
            max_bytes=1000,
        )
    rotated = f"v1,{'A' * 43}= {STANDARD['signature']}"
    with _at(STANDARD["timestamp"]):
        got = verify(
            "standard",
            secret=STANDARD["secret"],
            body=STANDARD["payload"].encode(),
            headers=_standard_headers(rotated),
        )
    assert got == STANDARD["id"]


def test_standard_keeps_the_librarys_window_and_refuses_overrides():
    with _at(STANDARD["timestamp"] + 301), pytest.raises(InvalidSignature, match="tolerance"):
        verify(
            Profile.STANDARD,
            secret=STANDARD["secret"],
            body=STANDARD["payload"].encode(),
            headers=_standard_headers(),
        )
    for kwargs in ({"now": 1700000000}, {"tolerance_s": 600}):
        with pytest.raises(ValueError, match="fixed 5 minute"):
            verify(Profile.STANDARD, secret=STANDARD["secret"], body=b"{}", headers={}, **kwargs)


def test_standard_id_returned_is_the_verified_one_when_the_header_repeats():
    at = datetime.fromtimestamp(time.time(), tz=UTC)
    headers = sign_headers(secret=STANDARD["secret"], event_id="real", body=CHAT.decode(), at=at)
    # The library lower-cases headers with the last spelling winning; so must we.
    headers = {"Webhook-Id": "forged", **headers}
    got = verify(Profile.STANDARD, secret=STANDARD["secret"], body=CHAT, headers=headers)
    assert got == "real"


# --- verify_and_parse_profile, every profile ---


def _signed(profile: Profile, secret: str, body: bytes) -> dict[str, str]:
    now = int(time.time())
    if profile is Profile.STRIPE:
        return {"Stripe-Signature": _stripe_header(secret, body, now)}
    if profile is Profile.GITHUB:
        return {"X-Hub-Signature-256": _github_header(secret, body), "X-GitHub-Delivery": "d"}
    at = datetime.fromtimestamp(now, tz=UTC)
    return sign_headers(secret=secret, event_id="evt", body=body.decode(), at=at)


@pytest.mark.parametrize("profile", list(Profile))
def test_verify_and_parse_profile_parses_the_body(profile):
    secret = STANDARD["secret"]
    inbound = verify_and_parse_profile(
        profile, secret=secret, body=CHAT, headers=_signed(profile, secret, CHAT), max_bytes=1000
    )
    assert (inbound.channel, inbound.provider_message_id, inbound.user_id, inbound.text) == (
        "webhook",
        "m-1",
        "u-1",
        "hello",
    )
    assert inbound.conversation_key == "user:u-1"


@pytest.mark.parametrize("profile", list(Profile))
def test_verify_and_parse_profile_checks_size_and_utf8_before_the_signature(profile):
    with pytest.raises(PayloadTooLarge):
        verify_and_parse_profile(profile, secret="s", body=b"x" * 11, headers={}, max_bytes=10)
    with pytest.raises(MalformedPayload, match="UTF-8"):
        verify_and_parse_profile(profile, secret="s", body=b"\xff\xfe", headers={}, max_bytes=10)


@pytest.mark.parametrize("profile", list(Profile))
def test_verify_and_parse_profile_refuses_a_bad_signature(profile):
    secret = STANDARD["secret"]
    headers = _signed(profile, secret, CHAT)
    with pytest.raises(InvalidSignature):
        verify_and_parse_profile(
            profile, secret=secret, body=CHAT + b" ", headers=headers, max_bytes=1000
        )


@pytest.mark.parametrize("profile", list(Profile))
def test_an_empty_secret_is_a_configuration_error(profile):
    with pytest.raises(ValueError, match="must not be empty"):
        verify(profile, secret="", body=CHAT, headers={})


def test_unknown_profile_is_refused():
    with pytest.raises(ValueError):
        verify("slack", secret="s", body=b"{}", headers={})  # type: ignore[arg-type]
