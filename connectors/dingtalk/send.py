"""Answering a DingTalk message (PROTOCOLS.md §A.4, §B.6): session webhook while it is
valid, else the robot OpenAPI with an access token.

One `send` makes one attempt per part; retrying belongs to the caller (a Celery task). A
long reply is split and its parts sent in order; on failure the error says how much of the
text was already delivered, so a retry can resume instead of repeating parts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from connectors.dingtalk.errors import (
    THROTTLE_RETRY_AFTER_S,
    DingTalkDeliveryError,
    check_openapi_response,
    check_webhook_response,
    is_token_rejection,
    network_error,
)
from connectors.dingtalk.split import (
    OPENAPI_MSGPARAM_MAX_BYTES,
    SESSION_WEBHOOK_MAX_BYTES,
    split_message,
    utf8_len,
)
from connectors.dingtalk.tokens import AccessTokenCache

DEFAULT_API_BASE = "https://api.dingtalk.com"
OTO_SEND_PATH = "/v1.0/robot/oToMessages/batchSend"
GROUP_SEND_PATH = "/v1.0/robot/groupMessages/send"
# Stop using the session webhook a minute before DingTalk says it expires, so a send that
# starts just in time does not land on a dead URL (the reply would be lost, not bounced).
WEBHOOK_SAFETY_MARGIN_MS = 60_000
# The body's sessionWebhook is not covered by the signature (§A.2): only post to DingTalk.
DINGTALK_WEBHOOK_PREFIX = "https://oapi.dingtalk.com/"

Format = Literal["text", "markdown"]


@dataclass(frozen=True)
class SendResult:
    via: Literal["session_webhook", "openapi"]
    parts: int
    process_query_keys: list[str] = field(default_factory=list)


class DingTalkSender:
    """Sends replies; the httpx client, token cache and clock are passed in (no globals).

    `webhook_prefixes`: URL prefixes a session webhook must start with to be used; by default
    DingTalk's oapi host and `api_base` (so a local fake serving both works). A webhook
    outside them is ignored and the OpenAPI is used instead.
    """

    def __init__(
        self,
        client: httpx.Client,
        *,
        api_base: str = DEFAULT_API_BASE,
        tokens: AccessTokenCache | None = None,
        clock: Callable[[], float] = time.time,
        webhook_prefixes: tuple[str, ...] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._client = client
        self._api_base = api_base.rstrip("/")
        self._clock = clock
        self._tokens = tokens or AccessTokenCache(client, api_base=api_base, clock=clock)
        self._webhook_prefixes = webhook_prefixes or (
            DINGTALK_WEBHOOK_PREFIX,
            self._api_base + "/",
        )
        self._timeout = timeout

    def send(
        self,
        *,
        handle: Mapping[str, Any],
        text: str,
        fmt: Format = "text",
        app_key: str,
        app_secret: str,
        robot_code: str,
        title: str = "Reply",
    ) -> SendResult:
        if fmt not in ("text", "markdown"):
            raise ValueError(f"fmt must be 'text' or 'markdown', got {fmt!r}")
        # Lone surrogates (from bad JSON escapes upstream) cannot be encoded; "replace" maps
        # each to one "?", so character offsets into `text` stay valid.
        text = text.encode("utf-8", "replace").decode("utf-8")
        if not text.strip():
            raise DingTalkDeliveryError("reply text is empty; nothing to send", permanent=True)
        via = "session_webhook" if self._webhook_usable(handle) else "openapi"
        try:
            if via == "session_webhook":
                return self._send_webhook(handle=handle, text=text, fmt=fmt, title=title)
            return self._send_openapi(
                handle=handle,
                text=text,
                fmt=fmt,
                title=title,
                app_key=app_key,
                app_secret=app_secret,
                robot_code=robot_code or str(handle.get("robot_code") or ""),
            )
        except DingTalkDeliveryError as exc:
            # The attempt log names the route that failed, as it does for successes.
            exc.via = via
            raise

    def _webhook_usable(self, handle: Mapping[str, Any]) -> bool:
        url = handle.get("session_webhook")
        expires = handle.get("session_webhook_expires_ms")
        if not isinstance(url, str) or not url.startswith(self._webhook_prefixes):
            return False
        if not isinstance(expires, int | float) or isinstance(expires, bool):
            return False
        return int(self._clock() * 1000) < expires - WEBHOOK_SAFETY_MARGIN_MS

    # -- session webhook -------------------------------------------------------------

    def _send_webhook(
        self, *, handle: Mapping[str, Any], text: str, fmt: Format, title: str
    ) -> SendResult:
        url = str(handle["session_webhook"])
        staff_id = str(handle.get("sender_staff_id") or "")
        mention = staff_id if handle.get("conversation_type") == "2" and staff_id else ""
        # INFERRED from DingTalk's custom-robot rules: markdown only renders an @ when the
        # text itself contains "@<userId>"; text messages get the mention from `at` alone.
        prefix = f"@{mention} " if mention and fmt == "markdown" else ""
        parts = split_message(text, limit_bytes=SESSION_WEBHOOK_MAX_BYTES - utf8_len(prefix))

        def deliver(index: int, part: str) -> None:
            first = index == 0
            payload: dict[str, Any]
            if fmt == "markdown":
                body = (prefix if first else "") + part
                payload = {"msgtype": "markdown", "markdown": {"title": title, "text": body}}
            else:
                payload = {"msgtype": "text", "text": {"content": part}}
            # Mention the asker once, on the first part, not on every continuation.
            if mention and first:
                payload["at"] = {"atUserIds": [mention]}
            try:
                response = self._client.post(url, json=payload, timeout=self._timeout)
            except httpx.HTTPError as exc:
                raise network_error(exc, "session webhook POST") from exc
            check_webhook_response(response)

        sent = _deliver_in_order(parts, deliver)
        return SendResult(via="session_webhook", parts=sent)

    # -- OpenAPI ---------------------------------------------------------------------

    def _send_openapi(
        self,
        *,
        handle: Mapping[str, Any],
        text: str,
        fmt: Format,
        title: str,
        app_key: str,
        app_secret: str,
        robot_code: str,
    ) -> SendResult:
        if not robot_code:
            raise DingTalkDeliveryError(
                "the session webhook is expired or unusable and no robotCode is configured "
                "for the OpenAPI fallback",
                permanent=True,
            )
        group = handle.get("conversation_type") == "2"
        staff_id = str(handle.get("sender_staff_id") or "")
        conversation_id = str(handle.get("conversation_id") or "")
        if group and not conversation_id:
            raise DingTalkDeliveryError(
                "group reply via OpenAPI needs the conversation id (openConversationId)",
                permanent=True,
            )
        if not group and not staff_id:
            raise DingTalkDeliveryError(
                "the session webhook is expired or unusable, and a 1:1 OpenAPI send needs "
                "the user's senderStaffId, which DingTalk leaves empty for external users "
                "and for robots that are not yet published",
                permanent=True,
            )
        msg_key = "sampleMarkdown" if fmt == "markdown" else "sampleText"

        def msg_param(part: str) -> str:
            param = {"title": title, "text": part} if fmt == "markdown" else {"content": part}
            return json.dumps(param, ensure_ascii=False, separators=(",", ":"))

        parts = _split_to_fit(text, msg_param)
        keys: list[str] = []

        def deliver(_index: int, part: str) -> None:
            body: dict[str, Any] = {"robotCode": robot_code, "msgKey": msg_key}
            body["msgParam"] = msg_param(part)
            if group:
                body["openConversationId"] = conversation_id
                answer = self._post_openapi(GROUP_SEND_PATH, body, app_key, app_secret)
            else:
                body["userIds"] = [staff_id]
                answer = self._post_openapi(OTO_SEND_PATH, body, app_key, app_secret)
                _check_staff_lists(answer, staff_id)
            key = answer.get("processQueryKey")
            if isinstance(key, str) and key:
                keys.append(key)

        sent = _deliver_in_order(parts, deliver)
        return SendResult(via="openapi", parts=sent, process_query_keys=keys)

    def _post_openapi(
        self, path: str, body: dict[str, Any], app_key: str, app_secret: str
    ) -> dict[str, Any]:
        what = f"POST {path}"
        # A token can be revoked before its expiry; one fresh-token retry hides that.
        for attempt in (1, 2):
            token = self._tokens.get(app_key, app_secret)
            try:
                response = self._client.post(
                    self._api_base + path,
                    json=body,
                    headers={"x-acs-dingtalk-access-token": token},
                    timeout=self._timeout,
                )
            except httpx.HTTPError as exc:
                raise network_error(exc, what) from exc
            try:
                return check_openapi_response(response, what=what)
            except DingTalkDeliveryError as exc:
                if not is_token_rejection(exc.status_code, exc.code):
                    raise
                self._tokens.invalidate(app_key)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover


def _check_staff_lists(answer: Mapping[str, Any], staff_id: str) -> None:
    # batchSend answers 200 even when it skipped the user; these lists say why.
    if staff_id in (answer.get("invalidStaffIdList") or []):
        raise DingTalkDeliveryError(
            f"batchSend rejected staff id {staff_id!r} as invalid (invalidStaffIdList)",
            permanent=True,
            code="invalidStaffIdList",
        )
    if staff_id in (answer.get("flowControlledStaffIdList") or []):
        raise DingTalkDeliveryError(
            f"batchSend flow-controlled staff id {staff_id!r} (flowControlledStaffIdList)",
            permanent=False,
            retry_after_s=THROTTLE_RETRY_AFTER_S,
            code="flowControlledStaffIdList",
        )


def _split_to_fit(text: str, msg_param: Callable[[str], str]) -> list[str]:
    """Split so each part's `msgParam` JSON (escapes and title included) fits the limit."""
    overhead = utf8_len(msg_param(""))
    return _refine(text, OPENAPI_MSGPARAM_MAX_BYTES - overhead, msg_param)


def _refine(text: str, limit: int, msg_param: Callable[[str], str]) -> list[str]:
    if limit < 4:
        raise DingTalkDeliveryError(
            "the markdown title leaves no room for text in msgParam", permanent=True
        )
    out: list[str] = []
    for part in split_message(text, limit_bytes=limit):
        size = utf8_len(msg_param(part))
        if size <= OPENAPI_MSGPARAM_MAX_BYTES:
            out.append(part)
        else:
            # JSON escaping (quotes, backslashes, control characters) grew this part.
            smaller = min(limit - 1, limit * OPENAPI_MSGPARAM_MAX_BYTES // size)
            out.extend(_refine(part, smaller, msg_param))
    return out


def _deliver_in_order(parts: list[str], deliver: Callable[[int, str], None]) -> int:
    """Send non-blank parts in order; on failure, record progress on the error."""
    delivered_chars = 0
    sent = 0
    for part in parts:
        # Trailing whitespace and blank lines at the edges are invisible in a chat bubble;
        # leading spaces are kept (markdown indentation).
        shown = part.rstrip().lstrip("\n")
        if shown.strip():
            try:
                deliver(sent, shown)
            except DingTalkDeliveryError as exc:
                exc.delivered_chars = delivered_chars
                exc.parts_sent = sent
                raise
            sent += 1
        delivered_chars += len(part)
    return sent
