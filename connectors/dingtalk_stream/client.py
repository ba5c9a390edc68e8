"""The official `dingtalk-stream` SDK client, adapted to run under our supervision.

What we take from the SDK: the frame models (`CallbackMessage`, `SystemMessage`), handler
dispatch and ACK construction (`DingTalkStreamClient.route_message`, `*Handler.raw_process`,
`AckMessage`), and the ping/disconnect answers of its `SystemHandler`.

What we replace, and why (facts from dingtalk-stream 0.24.3):
- `open_connection`: the SDK posts to `DingTalkStreamClient.OPEN_CONNECTION_API`, a constant
  read off the base class and fixed at import time, so it cannot be pointed at another
  gateway per client; it also has no HTTP timeout.
- the connect loop (`start`): it sleeps a fixed 3-10 s between tries (no backoff), swallows
  `CancelledError` (so it cannot be stopped by cancelling it), and has no `stop()`. That loop
  lives in `runner.StreamConnection`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from dingtalk_stream import (
    AckMessage,
    CallbackHandler,
    CallbackMessage,
    ChatbotMessage,
    Credential,
    DingTalkStreamClient,
)
from dingtalk_stream.version import VERSION_STRING

ROBOT_TOPIC: str = ChatbotMessage.TOPIC
OPEN_CONNECTION_PATH = "/v1.0/gateway/connections/open"

# (message_id, robot message) -> stored?
Deliver = Callable[[str, dict[str, Any]], Awaitable[bool]]


class OpenConnectionError(Exception):
    """`connections/open` gave no usable endpoint+ticket (bad credentials, outage, ...)."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class GatewayClient(DingTalkStreamClient):
    """An SDK client whose `connections/open` goes to `api_base` instead of the global URL."""

    def __init__(
        self,
        credential: Credential,
        *,
        api_base: str,
        http_timeout_s: float = 10.0,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__(credential, logger=logger)
        self.open_connection_url = api_base.rstrip("/") + OPEN_CONNECTION_PATH
        self.http_timeout_s = http_timeout_s

    def _open_request(self) -> tuple[dict[str, str], dict[str, Any]]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"DingTalkStream/1.0 SDK/{VERSION_STRING} "
            f"Python/{platform.python_version()}",
        }
        # Callback topics only: we register no event handler, and events unACKed get re-pushed.
        subscriptions = [{"type": "CALLBACK", "topic": t} for t in self.callback_handler_map]
        body = {
            "clientId": self.credential.client_id,
            "clientSecret": self.credential.client_secret,
            "subscriptions": subscriptions,
            "ua": f"dingtalk-sdk-python/v{VERSION_STRING}-union",
            "localIp": self.get_host_ip(),
        }
        return headers, body

    def _parse_open_response(self, status_code: int, text: str) -> dict[str, str]:
        if status_code != 200:
            # The body names the problem (e.g. bad clientId/secret); it never echoes the secret.
            raise OpenConnectionError(
                f"connections/open answered {status_code}: {text[:200]}", status_code=status_code
            )
        try:
            payload = json.loads(text)
        except ValueError as exc:
            raise OpenConnectionError("connections/open answered non-JSON") from exc
        if not isinstance(payload, dict):
            raise OpenConnectionError("connections/open answered a non-object")
        endpoint, ticket = payload.get("endpoint"), payload.get("ticket")
        if not isinstance(endpoint, str) or not isinstance(ticket, str) or not endpoint:
            raise OpenConnectionError("connections/open answered without endpoint/ticket")
        return {"endpoint": endpoint, "ticket": ticket}

    async def open_connection_async(self, http: httpx.AsyncClient) -> dict[str, str]:
        """A fresh endpoint+ticket; tickets are single-use, so call this before every connect."""
        headers, body = self._open_request()
        try:
            response = await http.post(
                self.open_connection_url, headers=headers, json=body, timeout=self.http_timeout_s
            )
        except httpx.HTTPError as exc:
            raise OpenConnectionError(f"connections/open failed: {exc!r}") from exc
        return self._parse_open_response(response.status_code, response.text)

    def open_connection(self) -> dict[str, str] | None:
        # Keeps the SDK's own contract (dict or None) so its `start()` would also honour
        # `api_base`; our runner uses `open_connection_async`, which can be cancelled.
        headers, body = self._open_request()
        try:
            response = httpx.post(
                self.open_connection_url, headers=headers, json=body, timeout=self.http_timeout_s
            )
            return self._parse_open_response(response.status_code, response.text)
        except (httpx.HTTPError, OpenConnectionError) as exc:
            self.logger.warning("open connection failed: %s", exc)
            return None


class DeliveryDeduper:
    """Runs the delivery of one `messageId` at most once while it keeps succeeding.

    The gateway may push a frame again (even after an ACK); every copy must be ACKed, but
    the message stored once. A failed delivery is forgotten, so a re-push retries it.
    Concurrent copies wait for the first instead of storing in parallel.
    """

    def __init__(
        self,
        *,
        ttl_s: float = 300.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._stored: OrderedDict[str, float] = OrderedDict()
        self._pending: dict[str, asyncio.Future[bool]] = {}

    def _expire(self) -> None:
        horizon = self._clock() - self._ttl_s
        while self._stored:
            oldest_id, at = next(iter(self._stored.items()))
            if at >= horizon and len(self._stored) <= self._max_entries:
                break
            del self._stored[oldest_id]

    async def run(self, message_id: str, deliver: Callable[[], Awaitable[bool]]) -> bool:
        if not message_id:
            return await deliver()
        self._expire()
        if message_id in self._stored:
            return True
        pending = self._pending.get(message_id)
        if pending is not None:
            # shield: a cancelled duplicate must not cancel the first copy's delivery.
            return await asyncio.shield(pending)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        stored = False
        try:
            stored = await deliver()
            return stored
        finally:
            del self._pending[message_id]
            if stored:
                self._stored[message_id] = self._clock()
            future.set_result(stored)


class RobotMessageHandler(CallbackHandler):
    """ACKs 200 only once `deliver` has stored the message; anything else is a 500."""

    def __init__(self, deliver: Deliver, *, logger: logging.Logger) -> None:
        super().__init__()
        self._deliver = deliver
        self.logger = logger

    async def process(self, message: CallbackMessage) -> tuple[int, str]:
        message_id = message.headers.message_id or ""
        if not isinstance(message.data, dict):
            return AckMessage.STATUS_BAD_REQUEST, "robot message data is not an object"
        try:
            stored = await self._deliver(message_id, message.data)
        except Exception:
            self.logger.exception("storing stream message %s failed", message_id)
            stored = False
        if stored:
            return AckMessage.STATUS_OK, "OK"
        return AckMessage.STATUS_SYSTEM_EXCEPTION, "message not stored"
