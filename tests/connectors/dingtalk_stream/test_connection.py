"""One Stream connection against the fake gateway: ACK semantics, §F.8 vectors, reconnects."""

from __future__ import annotations

import json
import random
import time

from connectors.dingtalk_stream import Backoff, StreamCredentials
from tests.connectors.dingtalk_stream.conftest import Store
from tests.support.fake_dingtalk_stream import ROBOT_TOPIC, FakeStreamGateway, robot_message
from tests.support.waiting import wait_until


def _connected(conn, gateway: FakeStreamGateway, *, sessions: int = 1) -> None:
    wait_until(lambda: conn.is_connected, timeout=5, what="the client to connect")
    wait_until(lambda: gateway.connection_count == sessions, timeout=5, what="the gateway session")


def test_robot_message_is_stored_then_acked_200(gateway, store: Store, connect):
    acks_seen_while_storing: list[int] = []

    def slow_store(message_id: str) -> None:
        time.sleep(0.1)  # an ACK sent before storing would have arrived by now
        acks_seen_while_storing.append(len(gateway.acks_for(message_id)))

    store.on_call = slow_store
    conn = connect()
    _connected(conn, gateway)
    data = robot_message(text=" 你好")

    message_id = gateway.push_robot_message(data)
    ack = gateway.wait_for_ack(message_id)

    assert store.calls == [("conn-a", message_id, data)]
    assert acks_seen_while_storing == [0]
    assert ack["code"] == 200
    assert ack["headers"]["messageId"] == message_id
    assert ack["headers"]["contentType"] == "application/json"
    call = gateway.open_calls[0]
    assert call.status == 200
    assert {"type": "CALLBACK", "topic": ROBOT_TOPIC} in call.subscriptions


def test_same_message_id_twice_runs_the_handler_once_and_acks_both(gateway, store, connect):
    conn = connect()
    _connected(conn, gateway)
    data = robot_message()

    message_id = gateway.push_robot_message(data)
    gateway.push_robot_message(data, message_id=message_id)
    gateway.wait_for_ack(message_id, count=2)

    assert store.call_counts()[message_id] == 1
    assert [a["code"] for a in gateway.acks_for(message_id)] == [200, 200]


def test_a_failed_store_is_not_acknowledged_and_a_repush_retries(gateway, store, connect):
    conn = connect()
    _connected(conn, gateway)
    store.fail = RuntimeError("database is down")
    data = robot_message()

    message_id = gateway.push_robot_message(data)
    assert gateway.wait_for_ack(message_id)["code"] == 500

    store.fail = True  # on_message returning False is just as much a refusal
    gateway.push_robot_message(data, message_id=message_id)
    assert gateway.wait_for_ack(message_id, count=2)["code"] == 500

    store.fail = False
    gateway.push_robot_message(data, message_id=message_id)
    assert gateway.wait_for_ack(message_id, count=3)["code"] == 200
    assert store.call_counts()[message_id] == 3
    assert list(store.stored) == [data["msgId"]]


def test_ping_is_answered_with_the_f8_pong(gateway, connect):
    conn = connect()
    _connected(conn, gateway)
    gateway.push_frame(
        {
            "specVersion": "1.0",
            "type": "SYSTEM",
            "headers": {"topic": "ping", "messageId": "m-1", "contentType": "application/json"},
            "data": '{"opaque":"123-dsfs"}',
        }
    )

    pong = gateway.wait_for_ack("m-1")

    assert {k: v for k, v in pong.items() if k != "data"} == {
        "code": 200,
        "headers": {"contentType": "application/json", "messageId": "m-1"},
        "message": "OK",
    }
    assert json.loads(pong["data"]) == {"opaque": "123-dsfs"}


def test_disconnect_frame_is_acked_then_reconnects_with_a_fresh_ticket(gateway, store, connect):
    conn = connect()
    _connected(conn, gateway)

    message_id = gateway.push_disconnect()

    assert gateway.wait_for_ack(message_id)["code"] == 200
    wait_until(lambda: conn.connect_count == 2, timeout=5, what="a reconnect")
    _connected(conn, gateway)
    tickets = [c.ticket for c in gateway.open_calls if c.status == 200]
    assert len(tickets) == 2
    assert len(set(tickets)) == 2
    assert gateway.rejected_count == 0
    after = gateway.push_robot_message()
    assert gateway.wait_for_ack(after)["code"] == 200


def test_abrupt_drop_reconnects_and_loses_nothing_acknowledged(gateway, store: Store, connect):
    conn = connect()
    _connected(conn, gateway)
    before = [gateway.push_robot_message() for _ in range(3)]
    for message_id in before:
        assert gateway.wait_for_ack(message_id)["code"] == 200

    gateway.available = False  # hold the outage open while we push into it
    assert gateway.drop_connections() == 1
    wait_until(lambda: not conn.is_connected, timeout=5, what="the client to notice the drop")
    during = [gateway.push_robot_message() for _ in range(2)]
    wait_until(
        lambda: any(c.status == 503 for c in gateway.open_calls),
        timeout=5,
        what="a reconnect attempt during the outage",
    )
    assert all(not gateway.acks_for(m) for m in during)
    gateway.available = True

    wait_until(lambda: conn.connect_count == 2, timeout=5, what="the reconnect")
    for message_id in during:
        assert gateway.wait_for_ack(message_id)["code"] == 200
    counts = store.call_counts()
    assert all(counts[m] == 1 for m in before + during)
    assert len(store.stored) == 5


def test_wrong_credentials_back_off_without_crashing(gateway, store, connect):
    conn = connect(client_id="app-a", secret="not-the-secret")

    wait_until(lambda: conn.open_attempts >= 3, timeout=5, what="retries")

    assert conn.is_alive
    assert not conn.is_connected
    assert conn.connect_count == 0
    assert "401" in conn.last_error
    assert "not-the-secret" not in conn.last_error
    assert {c.status for c in gateway.open_calls} == {401}


def test_stop_ends_the_thread_promptly(gateway, connect):
    conn = connect()
    _connected(conn, gateway)
    started = time.monotonic()
    assert conn.stop(timeout=5)
    assert time.monotonic() - started < 2
    assert not conn.is_connected
    wait_until(lambda: gateway.connection_count == 0, timeout=5, what="the session to end")


def test_backoff_grows_exponentially_with_jitter_and_caps_at_60s():
    backoff, rng = Backoff(), random.Random(7)
    delays = [backoff.delay(n, rng) for n in range(10)]
    for n, delay in enumerate(delays[:5]):
        assert 2**n <= delay <= 2**n + 1
    assert delays[-1] == 60.0
    assert all(backoff.delay(n, rng) <= 60.0 for n in range(100))


def test_credentials_repr_hides_the_secret():
    assert "s3cret" not in repr(StreamCredentials("id", "s3cret"))
