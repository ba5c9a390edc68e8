"""DingTalk Stream-mode connections: one SDK client per connector, each on its own thread.

A robot message is handed to `on_message(connector_key, message_id, data)` (which persists
it) and only then ACKed 200; when that fails the ACK is a 500, so the gateway never holds an
acknowledgement for a message we do not have. Reconnects use exponential backoff with
jitter and always fetch a fresh single-use ticket from `connections/open`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

import httpx
import websockets
from dingtalk_stream import Credential, DingTalkStreamClient
from websockets.exceptions import ConnectionClosed, WebSocketException

from connectors.dingtalk_stream.client import (
    ROBOT_TOPIC,
    DeliveryDeduper,
    GatewayClient,
    OpenConnectionError,
    RobotMessageHandler,
)

DEFAULT_API_BASE = "https://api.dingtalk.com"

# Synchronous, called on a worker thread: True once the message is stored (or already was).
OnMessage = Callable[[str, str, dict[str, Any]], bool]


@dataclass(frozen=True)
class StreamCredentials:
    client_id: str
    client_secret: str = field(repr=False)


@dataclass(frozen=True)
class Backoff:
    """`base * 2**attempt` plus up to `jitter_s`, never more than `cap_s` (PROTOCOLS §B.1)."""

    base_s: float = 1.0
    cap_s: float = 60.0
    jitter_s: float = 1.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        exponential = self.base_s * 2 ** min(attempt, 30)
        return min(self.cap_s, exponential + rng.uniform(0, self.jitter_s))


@dataclass(frozen=True)
class ConnectionOptions:
    backoff: Backoff = Backoff()
    http_timeout_s: float = 10.0
    ws_open_timeout_s: float = 10.0
    # websockets' own keepalive also notices a peer that vanished without closing.
    ws_ping_interval_s: float | None = 20.0
    ws_close_timeout_s: float = 3.0
    # How long a closing socket waits for in-flight messages to be stored and ACKed.
    drain_timeout_s: float = 5.0
    handler_workers: int = 4


class StreamConnection:
    """Runs one connector's SDK client on a private thread and event loop until stopped."""

    def __init__(
        self,
        key: str,
        credentials: StreamCredentials,
        on_message: OnMessage,
        *,
        api_base: str = DEFAULT_API_BASE,
        options: ConnectionOptions | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.key = key
        self.credentials = credentials
        self._on_message = on_message
        self._options = options or ConnectionOptions()
        self._log = logger or logging.getLogger(__name__)
        self._client = GatewayClient(
            Credential(credentials.client_id, credentials.client_secret),
            api_base=api_base,
            http_timeout_s=self._options.http_timeout_s,
            # Separate name: the SDK logs every gateway ping as an "unknown topic" WARNING.
            logger=self._log.getChild("sdk"),
        )
        self._client.register_callback_handler(
            ROBOT_TOPIC, RobotMessageHandler(self._deliver, logger=self._log)
        )
        self._dedupe = DeliveryDeduper()
        self._rng = random.Random()  # noqa: S311 - jitter, not a secret
        self._executor: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = threading.Lock()
        self._stop_requested = False
        self._connected = False
        self._connect_count = 0
        self._open_attempts = 0
        self.last_error: str = ""

    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    def connect_count(self) -> int:
        """WebSocket sessions opened so far (1 after the first connect, +1 per reconnect)."""
        return self._connect_count

    @property
    def open_attempts(self) -> int:
        return self._open_attempts

    @property
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                raise RuntimeError(f"stream connection {self.key!r} was already started")
            self._executor = ThreadPoolExecutor(
                max_workers=self._options.handler_workers,
                thread_name_prefix=f"dingtalk-stream-handler-{self.key}",
            )
            self._thread = threading.Thread(
                target=self._thread_main, name=f"dingtalk-stream-{self.key}", daemon=True
            )
            self._thread.start()

    def request_stop(self) -> None:
        """Ask the thread to finish; returns at once (see `join`)."""
        with self._lock:
            self._stop_requested = True
            # Under the lock the thread cannot close the loop between this check and the call.
            if self._loop is not None and self._task is not None:
                self._loop.call_soon_threadsafe(self._task.cancel)

    def join(self, timeout: float) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.is_alive

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop and wait; False when the thread outlived `timeout` (e.g. a stuck handler)."""
        self.request_stop()
        return self.join(timeout)

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            with self._lock:
                self._loop = loop
                self._task = loop.create_task(self._run())
                if self._stop_requested:
                    self._task.cancel()
            try:
                loop.run_until_complete(self._task)
            except asyncio.CancelledError:
                pass
            except Exception:
                self._log.exception("stream connection %s crashed", self.key)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            with self._lock:
                self._loop = None
                self._task = None
            loop.close()
            self._connected = False
            # Lets a store that is already running finish rather than abandoning it halfway.
            if self._executor is not None:
                self._executor.shutdown(wait=True, cancel_futures=True)

    async def _run(self) -> None:
        self._client.pre_start()
        attempt = 0
        async with httpx.AsyncClient() as http:
            while True:
                self._open_attempts += 1
                try:
                    opened = await self._client.open_connection_async(http)
                    uri = f"{opened['endpoint']}?ticket={quote_plus(opened['ticket'])}"
                    async with websockets.connect(
                        uri,
                        open_timeout=self._options.ws_open_timeout_s,
                        ping_interval=self._options.ws_ping_interval_s,
                        close_timeout=self._options.ws_close_timeout_s,
                    ) as ws:
                        attempt = 0
                        self._connect_count += 1
                        self._connected = True
                        self._log.info("stream connection %s connected", self.key)
                        await self._read(ws)
                    self.last_error = "closed by gateway"
                except (OpenConnectionError, OSError, WebSocketException, TimeoutError) as exc:
                    self.last_error = str(exc) or type(exc).__name__
                    self._log.warning("stream connection %s: %s", self.key, self.last_error)
                except Exception as exc:
                    # Never let one bad frame or SDK surprise end the connector for good.
                    self.last_error = repr(exc)
                    self._log.exception("stream connection %s failed", self.key)
                finally:
                    self._connected = False
                delay = self._options.backoff.delay(attempt, self._rng)
                attempt += 1
                await asyncio.sleep(delay)

    async def _read(self, ws: websockets.ClientConnection) -> None:
        # The SDK's route_message ACKs on `client.websocket`; it is only reassigned after
        # this socket's in-flight frames are done, so no ACK can land on a newer socket.
        self._client.websocket = ws
        in_flight: set[asyncio.Task[None]] = set()
        try:
            async for raw in ws:
                try:
                    frame = json.loads(raw)
                except ValueError:
                    self._log.warning("stream connection %s: non-JSON frame dropped", self.key)
                    continue
                task = asyncio.create_task(self._route(ws, frame))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        finally:
            if in_flight:
                _done, late = await asyncio.wait(
                    set(in_flight), timeout=self._options.drain_timeout_s
                )
                for task in late:
                    task.cancel()  # not ACKed: the gateway may push it again; msgId dedupes

    async def _route(self, ws: websockets.ClientConnection, frame: dict[str, Any]) -> None:
        try:
            result = await self._client.route_message(frame)
            if result == DingTalkStreamClient.TAG_DISCONNECT:
                # ACKed by the SDK already; the gateway wants a fresh connection (§B.4).
                self._log.info("stream connection %s: gateway asked to reconnect", self.key)
                await ws.close()
        except ConnectionClosed:
            self._log.info("stream connection %s: socket closed before the ACK", self.key)
        except Exception:
            self._log.exception("stream connection %s: frame handling failed", self.key)

    async def _deliver(self, message_id: str, data: dict[str, Any]) -> bool:
        loop = asyncio.get_running_loop()

        async def store() -> bool:
            # A worker thread: the callback does blocking I/O and must not stall pings.
            stored = await loop.run_in_executor(
                self._executor, self._on_message, self.key, message_id, data
            )
            return stored is True

        return await self._dedupe.run(message_id, store)


class StreamSupervisor:
    """Keeps one `StreamConnection` per enabled connector, matching a desired set.

    The caller polls its store and calls `reconcile`; enabling, disabling and credential
    rotation therefore apply without restarting the process.
    """

    def __init__(
        self,
        on_message: OnMessage,
        *,
        api_base: str = DEFAULT_API_BASE,
        options: ConnectionOptions | None = None,
        stop_timeout_s: float = 10.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self._on_message = on_message
        self._api_base = api_base
        self._options = options or ConnectionOptions()
        self._stop_timeout_s = stop_timeout_s
        self._log = logger or logging.getLogger(__name__)
        self._connections: dict[str, StreamConnection] = {}
        self._lock = threading.Lock()

    def connection(self, key: str) -> StreamConnection | None:
        with self._lock:
            return self._connections.get(key)

    def keys(self) -> set[str]:
        with self._lock:
            return set(self._connections)

    def reconcile(self, desired: Mapping[str, StreamCredentials]) -> None:
        with self._lock:
            retired = [
                key
                for key, conn in self._connections.items()
                if key not in desired or conn.credentials != desired[key] or not conn.is_alive
            ]
            # Old credentials stop before new ones start: a rotated secret may already be
            # revoked, and two sessions of one app would only split the pushes between them.
            self._stop(self._connections.pop(key) for key in retired)
            for key, credentials in desired.items():
                if key in self._connections:
                    continue
                conn = StreamConnection(
                    key,
                    credentials,
                    self._on_message,
                    api_base=self._api_base,
                    options=self._options,
                    logger=self._log,
                )
                conn.start()
                self._connections[key] = conn
                self._log.info("stream connector %s started", key)

    def stop_all(self) -> bool:
        """Stop every connection; False when one outlived the stop timeout."""
        with self._lock:
            conns = list(self._connections.values())
            self._connections.clear()
            if conns:
                # In-flight messages are still stored and ACKed for up to the drain timeout.
                self._log.info("stopping %d stream connection(s)", len(conns))
            return self._stop(conns)

    def run(
        self,
        load_desired: Callable[[], Mapping[str, StreamCredentials]],
        *,
        stop: threading.Event,
        poll_interval_s: float = 5.0,
    ) -> None:
        """Reconcile with `load_desired()` every `poll_interval_s` until `stop` is set."""
        try:
            while not stop.is_set():
                try:
                    self.reconcile(load_desired())
                except Exception:
                    # A store hiccup must not take the running connections down with it.
                    self._log.exception("loading stream connectors failed; keeping the last set")
                stop.wait(poll_interval_s)
        finally:
            self.stop_all()

    def _stop(self, conns: Iterable[StreamConnection]) -> bool:
        conns = list(conns)
        for conn in conns:
            conn.request_stop()  # all at once, so stopping N takes one timeout, not N
        deadline = time.monotonic() + self._stop_timeout_s
        clean = True
        for conn in conns:
            if not conn.join(max(0.0, deadline - time.monotonic())):
                clean = False
                self._log.warning("stream connector %s did not stop in time", conn.key)
            else:
                self._log.info("stream connector %s stopped", conn.key)
        return clean
