"""Turning DingTalk answers into success or a classified `DeliveryError` (PROTOCOLS.md §C).

Two error dialects: the session webhook (oapi) answers HTTP 200 with `{"errcode","errmsg"}`;
the v1.0 OpenAPI answers an HTTP status with `{"code","message","requestid"}`.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from connectors.base import DeliveryError

# 130101 "send too fast, exceed 20 times per minute": a minute clears the window. (The
# custom-robot doc says going over throttles for 10 minutes; the caller's growing backoff
# covers that if the first retry is throttled again.)
THROTTLE_RETRY_AFTER_S = 60.0

_WEBHOOK_THROTTLED = {130101, 410100}
# 310000: security check (keyword / sign / IP allowlist); 300001: token does not exist.
_WEBHOOK_PERMANENT = {310000, 300001}

_THROTTLE_HINTS = ("qps", "limit", "throttl", "flowcontrol", "toomany")


class DingTalkDeliveryError(DeliveryError):
    """A `DeliveryError` that also says what DingTalk said and how far a split reply got.

    `delivered_chars`: characters of the reply text already delivered before this failure;
    retry with `text[delivered_chars:]` so the user does not see earlier parts twice.
    `via`: the route that failed ("session_webhook" or "openapi"), set by the sender.
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        status_code: int | None = None,
        retry_after_s: float | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(
            message, permanent=permanent, status_code=status_code, retry_after_s=retry_after_s
        )
        self.code = code
        self.delivered_chars = 0
        self.parts_sent = 0
        self.via = ""


def network_error(exc: httpx.HTTPError, what: str) -> DingTalkDeliveryError:
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    return DingTalkDeliveryError(f"{what} {kind}: {exc}", permanent=False)


def retry_after(response: httpx.Response, default: float | None) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        # Absent, or the HTTP-date form, which DingTalk is not known to send.
        return default
    return max(seconds, 0.0)


def _json(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def check_webhook_response(response: httpx.Response) -> None:
    """Raise unless a session-webhook POST was accepted (`{"errcode":0}`)."""
    status = response.status_code
    if status == 429:
        raise DingTalkDeliveryError(
            "session webhook answered HTTP 429 (throttled)",
            permanent=False,
            status_code=status,
            retry_after_s=retry_after(response, THROTTLE_RETRY_AFTER_S),
        )
    if status >= 500 or status == 408:
        raise DingTalkDeliveryError(
            f"session webhook answered HTTP {status}", permanent=False, status_code=status
        )
    if status >= 400:
        raise DingTalkDeliveryError(
            f"session webhook answered HTTP {status}", permanent=True, status_code=status
        )
    body = _json(response)
    if body is None:
        raise DingTalkDeliveryError(
            f"session webhook answered HTTP {status} with a body that is not a JSON object",
            permanent=False,
            status_code=status,
        )
    errcode = body.get("errcode", 0)
    if errcode in (0, "0"):
        return
    errmsg = str(body.get("errmsg", ""))
    detail = f"session webhook errcode {errcode}: {errmsg}"
    try:
        code = int(errcode)
    except (TypeError, ValueError):
        code = None
    if code in _WEBHOOK_THROTTLED:
        raise DingTalkDeliveryError(
            detail,
            permanent=False,
            status_code=status,
            retry_after_s=THROTTLE_RETRY_AFTER_S,
            code=str(errcode),
        )
    raise DingTalkDeliveryError(
        detail,
        # Other codes (e.g. -1 "system busy") may clear up; only known set-up faults are final.
        permanent=code in _WEBHOOK_PERMANENT,
        status_code=status,
        code=str(errcode),
    )


def check_openapi_response(
    response: httpx.Response, *, what: str, credentials: bool = False
) -> dict[str, Any]:
    """Return the JSON body of a successful v1.0 OpenAPI call, else raise.

    `credentials`: the call presented appKey/appSecret (the token request), so an auth
    failure means wrong credentials (permanent) rather than a stale token (retryable).
    """
    status = response.status_code
    body = _json(response)
    if 200 <= status < 300:
        if body is None:
            raise DingTalkDeliveryError(
                f"{what} answered HTTP {status} with a body that is not a JSON object",
                permanent=False,
                status_code=status,
            )
        return body
    code = str((body or {}).get("code") or "")
    message = str((body or {}).get("message") or "")
    detail = f"{what} answered HTTP {status}" + (f" {code}" if code else "")
    detail += f": {message}" if message else ""
    if status == 429 or (status == 403 and _looks_throttled(code)):
        raise DingTalkDeliveryError(
            detail + " (throttled)",
            permanent=False,
            status_code=status,
            retry_after_s=retry_after(response, THROTTLE_RETRY_AFTER_S),
            code=code or None,
        )
    if status >= 500 or status == 408:
        raise DingTalkDeliveryError(detail, permanent=False, status_code=status, code=code or None)
    if is_token_rejection(status, code) and not credentials:
        # An expired or revoked token; the caller drops it and a retry fetches a new one.
        raise DingTalkDeliveryError(
            detail + " (access token rejected)",
            permanent=False,
            status_code=status,
            code=code or None,
        )
    # The rest of 4xx (invalidParameter.robotCode.*, invalidParameter.userIds.*,
    # invalid.openConversationId, bot.stopped, a missing permission) needs someone to fix
    # the set-up; resending the same request cannot succeed.
    permanent = 400 <= status < 500
    raise DingTalkDeliveryError(detail, permanent=permanent, status_code=status, code=code or None)


def is_token_rejection(status: int | None, code: str | None) -> bool:
    # DingTalk answers a bad or expired token with HTTP 400 and code InvalidAuthentication
    # ("不合法的access_token"; COMMUNITY, satorijs/satori#240), not only with 401.
    return status == 401 or code == "InvalidAuthentication"


def _looks_throttled(code: str) -> bool:
    # A bare 403 is how gateways throttle; a coded one names the reason.
    lowered = code.lower()
    return not code or any(hint in lowered for hint in _THROTTLE_HINTS)
