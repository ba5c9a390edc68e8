"""Inbound signature profiles: Standard Webhooks (native), Stripe-style and GitHub-style.

A tenant whose system already signs webhooks the Stripe or the GitHub way can point it at
its connector unchanged; only the signature check differs. The body is our canonical JSON
(`WebhookPayload`) in every profile, and every check runs on the raw bytes before parsing.

Replay protection differs per scheme:
- Standard: `webhook-timestamp` is signed and checked ±5 min by the reference library;
  `webhook-id` is signed, so it is a safe dedupe key.
- Stripe: `t` is signed; only too-old timestamps are refused, as Stripe's own SDK does.
  A future `t` is accepted, so a message signed with a clock running ahead stays valid
  past the tolerance; the body's `message_id` dedupe is what stops those replays.
- GitHub: nothing time-bound is signed, so a captured delivery verifies forever. Replay
  protection rests entirely on de-duplicating the body's `message_id` (signed, as part of
  the body). `X-GitHub-Delivery` is NOT covered by the HMAC: an attacker replaying a body
  can pick any delivery id, so it must never be the only dedupe key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum

from connectors.base import InboundMessage, InvalidSignature
from connectors.webhook.inbound import decode_body, parse_inbound, verify_standard
from connectors.webhook.outbound import sign_headers

DEFAULT_TOLERANCE_S = 300
_DIGITS = re.compile(r"[0-9]{1,15}")
_STRIPE_FORMAT = "expected 't=<unix seconds>,v1=<hex>[,v1=<hex>...]'"


class Profile(StrEnum):
    STANDARD = "standard"
    STRIPE = "stripe"
    GITHUB = "github"


def verify(
    profile: Profile,
    *,
    secret: str,
    body: bytes,
    headers: Mapping[str, str],
    now: float | None = None,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> str | None:
    """Check the signature; return the provider's delivery id, or None if it has none.

    Raises `InvalidSignature` when the request is not authentic. `now`/`tolerance_s` apply
    to the Stripe profile; Standard uses the reference library's fixed ±5 min window and
    wall clock, so passing either for it is refused rather than silently ignored.
    """
    profile = Profile(profile)
    if not secret:
        # An empty HMAC key is public knowledge: anyone could sign.
        raise ValueError("webhook secret must not be empty")
    if profile is Profile.STANDARD:
        if now is not None or tolerance_s != DEFAULT_TOLERANCE_S:
            raise ValueError(
                "the standard profile uses the standardwebhooks library's fixed 5 minute "
                "tolerance and the wall clock; now/tolerance_s cannot be set for it"
            )
        # The library signs text; `decode_body` raises MalformedPayload for bad UTF-8.
        text = decode_body(body, max_bytes=len(body))
        return verify_standard(secret=secret, text=text, headers=headers)
    if tolerance_s <= 0:
        raise ValueError("tolerance_s must be positive; timestamp checks cannot be disabled")
    lowered = _lower(headers)
    if profile is Profile.STRIPE:
        _verify_stripe(
            secret=secret,
            body=body,
            header=lowered.get("stripe-signature"),
            now=time.time() if now is None else now,
            tolerance_s=tolerance_s,
        )
        # Stripe's event id lives in the body; there is no delivery header.
        return None
    _verify_github(secret=secret, body=body, headers=lowered)
    return lowered.get("x-github-delivery") or None


def verify_and_parse_profile(
    profile: Profile,
    *,
    secret: str,
    body: bytes,
    headers: Mapping[str, str],
    max_bytes: int,
    now: float | None = None,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> InboundMessage:
    """Size check, UTF-8, signature, then parse: `verify_and_parse` for any profile."""
    text = decode_body(body, max_bytes=max_bytes)
    verify(
        profile,
        secret=secret,
        body=body,
        headers=headers,
        now=now,
        tolerance_s=tolerance_s,
    )
    return parse_inbound(text)


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    # Plain dicts are case-sensitive; lower-case like the standardwebhooks library does, so
    # one rule (last spelling wins) holds for every profile.
    return {k.lower(): v for k, v in headers.items()}


def _hmac_hex(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest().encode("ascii")


def _matches(expected: bytes, candidates: list[str]) -> bool:
    # Bytes, not str: compare_digest refuses non-ASCII str, and header values are arbitrary.
    # Every candidate is compared so timing does not reveal which one matched.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate.encode("utf-8"))
    return matched


def _parse_stripe_header(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not key:
            raise InvalidSignature(
                f"Stripe-Signature header is malformed: entry {item.strip()!r} is not "
                f"'key=value'; {_STRIPE_FORMAT}"
            )
        if key == "t":
            if timestamp is not None:
                raise InvalidSignature("Stripe-Signature header is malformed: more than one t=")
            if not _DIGITS.fullmatch(value):
                raise InvalidSignature(
                    f"Stripe-Signature header is malformed: t={value!r} is not a unix time "
                    "in seconds"
                )
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
        # v0 (Stripe's legacy test-mode scheme) and unknown schemes are ignored, as in
        # Stripe's SDK, so a header carrying them alongside a good v1 still verifies.
    if timestamp is None:
        raise InvalidSignature(f"Stripe-Signature header has no t= timestamp; {_STRIPE_FORMAT}")
    if not signatures:
        raise InvalidSignature(
            f"Stripe-Signature header has no v1= signature (v0 is not accepted); {_STRIPE_FORMAT}"
        )
    return timestamp, signatures


def _verify_stripe(
    *, secret: str, body: bytes, header: str | None, now: float, tolerance_s: int
) -> None:
    if header is None:
        raise InvalidSignature("missing Stripe-Signature header")
    timestamp, signatures = _parse_stripe_header(header)
    # The secret is the key verbatim, `whsec_` prefix included: Stripe never decodes it.
    expected = _hmac_hex(secret, str(timestamp).encode("ascii") + b"." + body)
    if not _matches(expected, signatures):
        raise InvalidSignature(
            "signature does not match: no v1 entry of Stripe-Signature matches; check the "
            "connector secret (used verbatim, whsec_ prefix included) and that the body is "
            "sent exactly as signed"
        )
    # Past-only, like Stripe's SDK (see the module docstring for what that leaves open).
    if timestamp < now - tolerance_s:
        raise InvalidSignature(
            f"Stripe-Signature timestamp is older than the {tolerance_s} s tolerance: "
            "check the sender's clock, or this is a replay"
        )


def _verify_github(*, secret: str, body: bytes, headers: Mapping[str, str]) -> None:
    header = headers.get("x-hub-signature-256")
    if header is None:
        if "x-hub-signature" in headers:
            raise InvalidSignature(
                "only the legacy SHA-1 X-Hub-Signature was sent; X-Hub-Signature-256 "
                "(sha256=<hex>) is required"
            )
        raise InvalidSignature("missing X-Hub-Signature-256 header")
    prefix, sep, digest = header.strip().partition("=")
    if not sep or prefix != "sha256":
        raise InvalidSignature("X-Hub-Signature-256 header is malformed: expected 'sha256=<hex>'")
    if not _matches(_hmac_hex(secret, body), [digest]):
        raise InvalidSignature(
            "signature does not match: check the connector secret and that the body is sent "
            "exactly as signed"
        )


def sign(
    profile: Profile, *, secret: str, body: str, event_id: str, now: float | None = None
) -> dict[str, str]:
    """Headers a sender of `profile` would attach: for test clients and admins' checks."""
    profile = Profile(profile)
    at = time.time() if now is None else now
    if profile is Profile.STANDARD:
        return sign_headers(
            secret=secret, event_id=event_id, body=body, at=datetime.fromtimestamp(at, tz=UTC)
        )
    raw = body.encode("utf-8")
    if profile is Profile.STRIPE:
        timestamp = int(at)
        digest = _hmac_hex(secret, str(timestamp).encode("ascii") + b"." + raw).decode()
        return {"Stripe-Signature": f"t={timestamp},v1={digest}"}
    return {
        "X-Hub-Signature-256": f"sha256={_hmac_hex(secret, raw).decode()}",
        "X-GitHub-Delivery": event_id,
    }
