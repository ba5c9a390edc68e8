from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from connectors.dingtalk_stream import (
    Backoff,
    ConnectionOptions,
    StreamConnection,
    StreamCredentials,
)
from tests.support.fake_dingtalk_stream import FakeStreamGateway

SECRET_A = "secret-a"

# Short enough that reconnect tests take tenths of a second, not the production minute.
FAST = ConnectionOptions(
    backoff=Backoff(base_s=0.05, cap_s=0.3, jitter_s=0.05),
    http_timeout_s=2.0,
    ws_open_timeout_s=2.0,
    ws_close_timeout_s=0.5,
    drain_timeout_s=1.0,
)


class Store:
    """Stands in for the platform's persistence: dedupes on the robot message's msgId."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.stored: dict[str, tuple[str, dict[str, Any]]] = {}
        self.fail: BaseException | bool = False
        self.on_call: Callable[[str], None] | None = None

    def __call__(self, key: str, message_id: str, data: dict[str, Any]) -> bool:
        with self._lock:
            self.calls.append((key, message_id, data))
        if self.on_call is not None:
            self.on_call(message_id)
        if isinstance(self.fail, BaseException):
            raise self.fail
        if self.fail:
            return False
        with self._lock:
            self.stored.setdefault(data["msgId"], (key, data))
        return True

    def call_counts(self) -> Counter[str]:
        with self._lock:
            return Counter(message_id for _key, message_id, _data in self.calls)


def stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("dingtalk-stream")]


def wait_no_stream_threads(timeout: float = 5.0) -> list[threading.Thread]:
    deadline = time.monotonic() + timeout
    while stream_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    return stream_threads()


@pytest.fixture
def gateway() -> Iterator[FakeStreamGateway]:
    with FakeStreamGateway() as fake:
        fake.register_app("app-a", SECRET_A)
        yield fake


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def connect(gateway: FakeStreamGateway, store: Store) -> Iterator[Callable[..., StreamConnection]]:
    started: list[StreamConnection] = []

    def make(
        key: str = "conn-a", client_id: str = "app-a", secret: str = SECRET_A
    ) -> StreamConnection:
        conn = StreamConnection(
            key,
            StreamCredentials(client_id, secret),
            store,
            api_base=gateway.api_base,
            options=FAST,
        )
        conn.start()
        started.append(conn)
        return conn

    yield make
    for conn in started:
        assert conn.stop(timeout=5.0), f"{conn.key} did not stop"
