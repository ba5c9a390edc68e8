"""Callback signature check for DingTalk app robots (PROTOCOLS.md §A.2).

DingTalk signs only `timestamp + "\\n" + appSecret`, never the body, so a captured
`(timestamp, sign)` pair can be replayed with any body for up to an hour. The caller must
de-duplicate on `msgId` and should not trust the body's `sessionWebhook` blindly (the
sender only posts to DingTalk hosts it was told to trust).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from connectors.base import InvalidSignature

# Documented: a timestamp more than 1 hour from now, either way, is an illegal request.
MAX_SKEW_MS = 3_600_000


def compute_sign(timestamp: str, app_secret: str) -> str:
    """Base64(HMAC-SHA256(key=appSecret, msg=timestamp + "\\n" + appSecret)), not URL-encoded."""
    message = f"{timestamp}\n{app_secret}".encode()
    digest = hmac.new(app_secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_request(
    *, timestamp: str | None, sign: str | None, app_secret: str, now_ms: int
) -> None:
    """Raise `InvalidSignature` unless the `timestamp`/`sign` headers are fresh and genuine.

    `timestamp` is used exactly as received: the signature covers its string form, so
    re-formatting it (e.g. stripping leading zeros) would change what was signed.
    """
    if not timestamp or not sign:
        missing = [name for name, value in (("timestamp", timestamp), ("sign", sign)) if not value]
        raise InvalidSignature(
            f"missing DingTalk signature header(s): {', '.join(missing)}",
            details=[{"field": name, "message": "header is required"} for name in missing],
        )
    # isdigit() alone accepts non-ASCII digits such as "١٢٣", which int() would parse.
    if not (timestamp.isascii() and timestamp.isdigit()):
        raise InvalidSignature(
            "timestamp header is not a decimal number of milliseconds",
            details=[{"field": "timestamp", "message": "expected milliseconds since the epoch"}],
        )
    skew = now_ms - int(timestamp)
    if skew > MAX_SKEW_MS:
        raise InvalidSignature(
            f"timestamp is too old ({skew // 1000} s before now; the limit is 1 hour): "
            "check the server clock, or this is a replay",
            details=[{"field": "timestamp", "message": "too old"}],
        )
    if skew < -MAX_SKEW_MS:
        raise InvalidSignature(
            f"timestamp is in the future ({-skew // 1000} s after now; the limit is 1 hour): "
            "check the server clock",
            details=[{"field": "timestamp", "message": "in the future"}],
        )
    expected = compute_sign(timestamp, app_secret)
    # Bytes, not str: compare_digest refuses non-ASCII str, and a header can hold anything.
    if hmac.compare_digest(sign.encode("utf-8", "surrogatepass"), expected.encode("ascii")):
        return
    hint = (
        " (the value looks URL-encoded; DingTalk sends raw base64)"
        if "%" in sign
        else ": check the app's Client Secret (AppSecret)"
    )
    raise InvalidSignature(
        f"sign does not match{hint}",
        details=[{"field": "sign", "message": "signature mismatch"}],
    )
