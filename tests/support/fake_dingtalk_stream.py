"""A fake DingTalk Stream gateway on loopback (PROTOCOLS.md §B).

- HTTP `POST /v1.0/gateway/connections/open` checks the clientId/clientSecret a test
  registered and hands out a single-use ticket for `ws://127.0.0.1:<port>/connect`.
- The WebSocket server accepts each ticket once, pushes §B.2 frames, records every ACK.

Unlike the real gateway, frames pushed while an app has no live connection are queued and
sent when it next connects, so tests can prove that an outage loses nothing.
Both servers run on their own threads; the methods here are synchronous with bounded waits.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

ROBOT_TOPIC = "/v1.0/im/bot/messages/get"
OPEN_PATH = "/v1.0/gateway/connections/open"
TICKET_TTL_S = 90.0
CALL_TIMEOUT_S = 5.0

T = TypeVar("T")


@dataclass(frozen=True)
class OpenCall:
    client_id: str
    client_secret: str
    subscriptions: list[dict[str, str]]
    status: int
    ticket: str | None


def robot_message(
    *, msg_id: str | None = None, text: str = " hello", sender_staff_id: str = "user-1"
) -> dict[str, Any]:
    """A 1:1 text message with the A.3 schema."""
    now_ms = int(time.time() * 1000)
    return {
        "conversationId": "cidTest1234==",
        "chatbotCorpId": "dingcorp",
        "chatbotUserId": "$:LWCP_v1:$robot",
        "msgId": msg_id or f"msg{uuid.uuid4().hex}",
        "senderNick": "Tester",
        "isAdmin": False,
        "senderStaffId": sender_staff_id,
        "sessionWebhookExpiredTime": now_ms + 5_400_000,
        "createAt": now_ms,
        "senderCorpId": "dingcorp",
        "conversationType": "1",
        "senderId": "$:LWCP_v1:$sender",
        "sessionWebhook": "https://oapi.dingtalk.com/robot/sendBySession?session=test",
        "robotCode": "dingrobot",
        "msgtype": "text",
        "text": {"content": text},
    }


def frame(kind: str, topic: str, data: dict[str, Any], *, message_id: str) -> dict[str, Any]:
    """A §B.2 frame; `data` travels as a JSON-encoded string."""
    return {
        "specVersion": "1.0",
        "type": kind,
        "headers": {
            "appId": "fake-app",
            "connectionId": "fake-connection",
            "contentType": "application/json",
            "messageId": message_id,
            "time": str(int(time.time() * 1000)),
            "topic": topic,
        },
        "data": json.dumps(data, ensure_ascii=False),
    }


class FakeStreamGateway:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._apps: dict[str, str] = {}
        self._tickets: dict[str, tuple[str, float]] = {}  # ticket -> (client_id, issued)
        self._live: dict[str, list[ServerConnection]] = {}
        self._queued: dict[str, list[dict[str, Any]]] = {}
        self._acks: list[dict[str, Any]] = []
        self._open_calls: list[OpenCall] = []
        self._accepted = 0
        self._rejected = 0
        self.available = True
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name="fake-dingtalk-stream-ws", daemon=True
        )
        self._ws_server: Server | None = None
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _OpenHandler)
        self._http.gateway = self  # type: ignore[attr-defined]
        self._http_thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": 0.05},  # shutdown() waits up to one poll
            name="fake-dingtalk-stream-http",
            daemon=True,
        )
        self.ws_port = 0

    # lifecycle ----------------------------------------------------------------------------

    def start(self) -> FakeStreamGateway:
        self._loop_thread.start()

        async def listen() -> Server:
            return await serve(self._session, "127.0.0.1", 0, process_request=self._check_ticket)

        self._ws_server = self._call(listen())
        self.ws_port = self._ws_server.sockets[0].getsockname()[1]
        self._http_thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        if self._ws_server is not None:
            self._ws_server.close()
            self._call(self._ws_server.wait_closed())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(CALL_TIMEOUT_S)
        self._http_thread.join(CALL_TIMEOUT_S)
        self._loop.close()

    def __enter__(self) -> FakeStreamGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    # test controls ------------------------------------------------------------------------

    def register_app(self, client_id: str, client_secret: str) -> None:
        """Add an app, or rotate its secret (the old one stops working at once)."""
        with self._lock:
            self._apps[client_id] = client_secret

    @property
    def open_calls(self) -> list[OpenCall]:
        with self._lock:
            return list(self._open_calls)

    @property
    def connection_count(self) -> int:
        """Live WebSocket sessions, all apps."""
        with self._lock:
            return sum(len(c) for c in self._live.values())

    def live_connections(self, client_id: str) -> int:
        with self._lock:
            return len(self._live.get(client_id, []))

    @property
    def accepted_count(self) -> int:
        return self._accepted

    @property
    def rejected_count(self) -> int:
        return self._rejected

    def push_frame(self, payload: dict[str, Any], *, client_id: str | None = None) -> None:
        self._call(self._send(self._app(client_id), payload))

    def push_robot_message(
        self,
        data: dict[str, Any] | None = None,
        *,
        client_id: str | None = None,
        message_id: str | None = None,
    ) -> str:
        message_id = message_id or f"stream-{uuid.uuid4().hex}"
        payload = frame("CALLBACK", ROBOT_TOPIC, data or robot_message(), message_id=message_id)
        self.push_frame(payload, client_id=client_id)
        return message_id

    def push_ping(self, opaque: str = "123-dsfs", *, client_id: str | None = None) -> str:
        message_id = f"ping-{uuid.uuid4().hex}"
        payload = frame("SYSTEM", "ping", {"opaque": opaque}, message_id=message_id)
        self.push_frame(payload, client_id=client_id)
        return message_id

    def push_disconnect(
        self, reason: str = "connection is expired", *, client_id: str | None = None
    ) -> str:
        message_id = f"disconnect-{uuid.uuid4().hex}"
        payload = frame("SYSTEM", "disconnect", {"reason": reason}, message_id=message_id)
        self.push_frame(payload, client_id=client_id)
        return message_id

    def acks_for(self, message_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [a for a in self._acks if a.get("headers", {}).get("messageId") == message_id]

    def wait_for_ack(
        self, message_id: str, timeout: float = 5.0, *, count: int = 1
    ) -> dict[str, Any]:
        """The latest ACK for `message_id` once `count` have arrived; AssertionError otherwise."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.acks_for(message_id)) >= count, timeout):
                raise AssertionError(f"no ACK #{count} for {message_id} within {timeout}s")
            return self.acks_for(message_id)[-1]

    def drop_connections(self, client_id: str | None = None) -> int:
        """Cut live sessions at the TCP level: no close frame, as a network failure would."""

        async def drop() -> int:
            with self._lock:
                victims = [
                    conn
                    for app, conns in self._live.items()
                    if client_id is None or app == client_id
                    for conn in conns
                ]
                # Forget them first, so a push right after this queues instead of vanishing.
                for conns in self._live.values():
                    conns[:] = [c for c in conns if c not in victims]
            for conn in victims:
                conn.transport.abort()
            return len(victims)

        return self._call(drop())

    # internals ----------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CALL_TIMEOUT_S)

    def _app(self, client_id: str | None) -> str:
        with self._lock:
            if client_id is not None:
                return client_id
            if len(self._apps) != 1:
                raise ValueError("several apps registered: name the client_id")
            return next(iter(self._apps))

    def open_connection(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        client_id = str(body.get("clientId", ""))
        secret = str(body.get("clientSecret", ""))
        subscriptions = body.get("subscriptions") or []
        with self._lock:
            if not self.available:
                status, reply, ticket = 503, {"code": "ServiceUnavailable"}, None
            elif not client_id or self._apps.get(client_id) != secret:
                status, ticket = 401, None
                reply = {"code": "InvalidAuthentication", "message": "bad clientId/clientSecret"}
            else:
                status, ticket = 200, str(uuid.uuid4())
                self._tickets[ticket] = (client_id, time.monotonic())
                reply = {"endpoint": f"ws://127.0.0.1:{self.ws_port}/connect", "ticket": ticket}
            self._open_calls.append(OpenCall(client_id, secret, subscriptions, status, ticket))
        return status, reply

    def _check_ticket(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        ticket = (parse_qs(url.query).get("ticket") or [""])[0]
        with self._lock:
            issued = self._tickets.pop(ticket, None)  # single use: gone even if expired
            if url.path != "/connect" or issued is None:
                self._rejected += 1
                return connection.respond(HTTPStatus.FORBIDDEN, "unknown or used ticket\n")
            if time.monotonic() - issued[1] > TICKET_TTL_S:
                self._rejected += 1
                return connection.respond(HTTPStatus.FORBIDDEN, "expired ticket\n")
            connection.client_id = issued[0]  # type: ignore[attr-defined]
        return None

    async def _session(self, conn: ServerConnection) -> None:
        client_id: str = conn.client_id  # type: ignore[attr-defined]
        with self._lock:
            self._accepted += 1
            self._live.setdefault(client_id, []).append(conn)
            backlog, self._queued[client_id] = self._queued.get(client_id, []), []
        for payload in backlog:
            await self._send(client_id, payload)
        try:
            async for raw in conn:
                ack = json.loads(raw)
                with self._lock:
                    self._acks.append(ack)
                    self._lock.notify_all()
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                conns = self._live.get(client_id, [])
                if conn in conns:
                    conns.remove(conn)

    async def _send(self, client_id: str, payload: dict[str, Any]) -> None:
        with self._lock:
            conns = list(self._live.get(client_id, []))
        for conn in reversed(conns):  # newest first
            try:
                await conn.send(json.dumps(payload, ensure_ascii=False))
                return
            except ConnectionClosed:
                continue
        with self._lock:
            self._queued.setdefault(client_id, []).append(payload)


class _OpenHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        gateway: FakeStreamGateway = self.server.gateway  # type: ignore[attr-defined]
        if self.path != OPEN_PATH:
            self._reply(404, {"code": "NotFound"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._reply(400, {"code": "InvalidJSON"})
            return
        status, reply = gateway.open_connection(body if isinstance(body, dict) else {})
        self._reply(status, reply)

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output readable
