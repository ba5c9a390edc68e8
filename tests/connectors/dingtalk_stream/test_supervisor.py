"""The supervisor keeps one connection per enabled connector, following reconcile()."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from connectors.dingtalk_stream import StreamCredentials, StreamSupervisor
from tests.connectors.dingtalk_stream.conftest import (
    FAST,
    Store,
    stream_threads,
    wait_no_stream_threads,
)
from tests.support.fake_dingtalk_stream import FakeStreamGateway, robot_message
from tests.support.waiting import wait_until

A = StreamCredentials("app-a", "secret-a")
B = StreamCredentials("app-b", "secret-b")


@pytest.fixture
def supervisor(gateway: FakeStreamGateway, store: Store) -> Iterator[StreamSupervisor]:
    gateway.register_app("app-b", "secret-b")
    sup = StreamSupervisor(store, api_base=gateway.api_base, options=FAST, stop_timeout_s=5)
    yield sup
    assert sup.stop_all()
    assert wait_no_stream_threads() == []


def _connected(sup: StreamSupervisor, key: str) -> None:
    wait_until(
        lambda: (c := sup.connection(key)) is not None and c.is_connected,
        timeout=5,
        what=f"{key} to connect",
    )


def test_reconcile_adds_and_removes_connections(gateway, store: Store, supervisor):
    supervisor.reconcile({"a": A, "b": B})
    _connected(supervisor, "a")
    _connected(supervisor, "b")
    first_a = supervisor.connection("a")

    data = robot_message()
    message_id = gateway.push_robot_message(data, client_id="app-b")
    assert gateway.wait_for_ack(message_id)["code"] == 200
    assert store.stored[data["msgId"]][0] == "b"

    old_b = supervisor.connection("b")
    supervisor.reconcile({"a": A})

    assert supervisor.keys() == {"a"}
    assert old_b is not None and not old_b.is_alive
    wait_until(lambda: gateway.live_connections("app-b") == 0, timeout=5, what="b's session end")
    assert supervisor.connection("a") is first_a  # untouched: no needless reconnect
    assert first_a is not None and first_a.connect_count == 1


def test_rotating_credentials_replaces_the_connection(gateway, supervisor):
    supervisor.reconcile({"a": A})
    _connected(supervisor, "a")
    old = supervisor.connection("a")

    gateway.register_app("app-a", "secret-a2")  # the old secret is revoked at once
    rotated = StreamCredentials("app-a", "secret-a2")
    supervisor.reconcile({"a": rotated})

    assert old is not None and not old.is_alive
    _connected(supervisor, "a")
    new = supervisor.connection("a")
    assert new is not old and new is not None and new.credentials == rotated
    assert gateway.open_calls[-1].client_secret == "secret-a2"
    assert gateway.open_calls[-1].status == 200
    wait_until(lambda: gateway.live_connections("app-a") == 1, timeout=5, what="one session")
    message_id = gateway.push_robot_message(client_id="app-a")
    assert gateway.wait_for_ack(message_id)["code"] == 200


def test_wrong_credentials_retry_with_backoff_until_fixed(gateway, supervisor):
    supervisor.reconcile({"a": A, "b": StreamCredentials("app-b", "wrong")})
    _connected(supervisor, "a")
    bad = supervisor.connection("b")
    assert bad is not None

    wait_until(lambda: bad.open_attempts >= 3, timeout=5, what="b's retries")
    assert bad.is_alive and not bad.is_connected
    assert "401" in bad.last_error

    supervisor.reconcile({"a": A, "b": B})
    _connected(supervisor, "b")


def test_stop_all_leaves_no_threads(gateway, store, supervisor):
    supervisor.reconcile({"a": A, "b": B})
    _connected(supervisor, "a")
    _connected(supervisor, "b")
    message_id = gateway.push_robot_message(client_id="app-a")
    gateway.wait_for_ack(message_id)  # so the handler pool has started a worker thread
    assert len(stream_threads()) >= 3

    assert supervisor.stop_all()

    assert wait_no_stream_threads() == []
    assert supervisor.keys() == set()
    wait_until(lambda: gateway.connection_count == 0, timeout=5, what="sessions to end")


def test_run_follows_the_desired_set_until_stopped(gateway, supervisor):
    desired: dict[str, StreamCredentials] = {"a": A}
    stop = threading.Event()
    runner = threading.Thread(
        target=supervisor.run,
        args=(lambda: dict(desired),),
        kwargs={"stop": stop, "poll_interval_s": 0.05},
    )
    runner.start()
    try:
        _connected(supervisor, "a")
        desired["b"] = B
        _connected(supervisor, "b")
        del desired["a"]
        wait_until(lambda: supervisor.keys() == {"b"}, timeout=5, what="a to be disabled")
    finally:
        stop.set()
        runner.join(5)
    assert not runner.is_alive()
    assert supervisor.keys() == set()
    assert wait_no_stream_threads() == []
