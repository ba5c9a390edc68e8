"""DingTalk Stream mode through real processes: the `dingtalk_stream` management command
(official SDK underneath) against a fake Stream gateway, the test database, and, for the
reply, a Celery worker, a simulated vLLM endpoint and a fake DingTalk HTTP server."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction

from switchboard.bots.models import Connector
from switchboard.conversations.models import Message
from tests.support import processes
from tests.support.fake_dingtalk import FakeDingTalk
from tests.support.fake_dingtalk_stream import FakeStreamGateway, OpenCall, robot_message
from tests.support.stream_fixtures import (
    STOPPED_LINE,
    STOPPING_LINE,
    StreamCommand,
    blocked_inserts,
    stream_command,
    subprocess_database_url,
)
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ROBOT_CODE = "dingrobot"  # what `robot_message` carries
WAIT_S = 15
REPLY_WAIT_S = 60


@pytest.fixture
def gateway() -> Iterator[FakeStreamGateway]:
    with FakeStreamGateway() as fake:
        yield fake


@pytest.fixture
def stream_connector(bot: Any, gateway: FakeStreamGateway) -> Connector:
    from switchboard.bots.services import connector_create_dingtalk

    app_key = f"dingstream{uuid.uuid4().hex[:12]}"
    secret = f"secret-{uuid.uuid4().hex}"
    gateway.register_app(app_key, secret)
    return connector_create_dingtalk(
        bot=bot,
        name="Stream robot",
        app_key=app_key,
        app_secret=secret,
        robot_code=ROBOT_CODE,
        mode=Connector.DingTalkMode.STREAM,
    )


@pytest.fixture
def command(
    stream_connector: Connector, gateway: FakeStreamGateway, tmp_path: Path
) -> Iterator[StreamCommand]:
    with stream_command(tmp_path, gateway_base=gateway.api_base) as cmd:
        wait_for_live(gateway, stream_connector.app_key, cmd)
        yield cmd


def wait_for_live(gateway: FakeStreamGateway, app_key: str, cmd: StreamCommand) -> None:
    def live() -> bool:
        assert cmd.alive(), cmd.output()
        return gateway.live_connections(app_key) == 1

    wait_until(live, timeout=WAIT_S, what=f"one live Stream connection for {app_key}")


def successful_opens(gateway: FakeStreamGateway, app_key: str) -> list[OpenCall]:
    return [c for c in gateway.open_calls if c.client_id == app_key and c.status == 200]


def inbound(msg_id: str) -> list[Message]:
    return list(
        Message.objects.filter(direction="in", provider_message_id=msg_id).select_related(
            "conversation__end_user"
        )
    )


def assert_ok_ack(ack: dict[str, Any], message_id: str) -> None:
    assert ack["code"] == 200, ack
    assert ack["headers"]["messageId"] == message_id


def test_robot_message_is_stored_before_the_gateway_gets_its_ack(
    command: StreamCommand, stream_connector: Connector, gateway: FakeStreamGateway
) -> None:
    app = stream_connector.app_key
    table = Message._meta.db_table
    dm = robot_message(text=" where is my order?", sender_staff_id="staff-dm")
    # Hold the command's INSERT on a table lock: while it waits, the gateway must have no ACK.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f'LOCK TABLE "{table}" IN EXCLUSIVE MODE')
        held_id = gateway.push_robot_message(dm, client_id=app)
        wait_until(
            lambda: blocked_inserts(cursor, table) > 0,
            timeout=WAIT_S,
            what="the command to block storing the message",
        )
        assert gateway.acks_for(held_id) == []
    ack = gateway.wait_for_ack(held_id, timeout=WAIT_S)
    [stored] = inbound(dm["msgId"])  # already committed when the ACK is seen
    assert_ok_ack(ack, held_id)
    assert stored.connector_id == stream_connector.pk
    assert stored.text == "where is my order?"
    assert stored.conversation.external_key == f"dm:{dm['conversationId']}"
    assert stored.conversation.end_user.external_id == "staff-dm"
    assert stored.reply_handle["session_webhook"] == dm["sessionWebhook"]

    group = robot_message(text=" hello all", sender_staff_id="staff-grp")
    group.update(conversationType="2", conversationId="cidGroupChat==", conversationTitle="Ops")
    group_id = gateway.push_robot_message(group, client_id=app)
    ack = gateway.wait_for_ack(group_id, timeout=WAIT_S)
    [stored] = inbound(group["msgId"])
    assert_ok_ack(ack, group_id)
    assert stored.conversation.external_key == "group:cidGroupChat=="
    assert stored.conversation.end_user.external_id == "staff-grp"


def test_repushed_frames_and_repeated_msg_ids_store_one_message_and_ack_every_push(
    command: StreamCommand, stream_connector: Connector, gateway: FakeStreamGateway
) -> None:
    app = stream_connector.app_key
    data = robot_message(text=" once only")
    frame_id = gateway.push_robot_message(data, client_id=app)
    gateway.push_robot_message(data, client_id=app, message_id=frame_id)
    other_id = gateway.push_robot_message(data, client_id=app)  # new frame, same msgId

    acks = gateway.wait_for_ack(frame_id, timeout=WAIT_S, count=2)
    assert_ok_ack(acks, frame_id)
    assert all(a["code"] == 200 for a in gateway.acks_for(frame_id))
    assert_ok_ack(gateway.wait_for_ack(other_id, timeout=WAIT_S), other_id)
    assert len(inbound(data["msgId"])) == 1
    assert Message.objects.filter(direction="in").count() == 1


def test_message_for_another_robot_is_acked_but_not_stored(
    command: StreamCommand, stream_connector: Connector, gateway: FakeStreamGateway
) -> None:
    app = stream_connector.app_key
    foreign = robot_message(text=" not for you")
    foreign["robotCode"] = "dingsomeoneelse"
    foreign_id = gateway.push_robot_message(foreign, client_id=app)
    mine = robot_message(text=" for you")
    mine_id = gateway.push_robot_message(mine, client_id=app)

    assert_ok_ack(gateway.wait_for_ack(foreign_id, timeout=WAIT_S), foreign_id)
    assert_ok_ack(gateway.wait_for_ack(mine_id, timeout=WAIT_S), mine_id)
    assert inbound(foreign["msgId"]) == []
    assert len(inbound(mine["msgId"])) == 1


@pytest.fixture
def ding() -> Iterator[FakeDingTalk]:
    with FakeDingTalk() as fake:
        yield fake


@pytest.fixture
def worker(ding: FakeDingTalk, worker_tmp: Path, redis_client: Any) -> Iterator[None]:
    from django.conf import settings

    redis_client.delete("realtime", "chat", "default")  # nothing left over from other tests
    with processes.celery_worker(
        worker_tmp,
        database_url=subprocess_database_url(),
        redis_url=settings.REDIS_URL,
        extra_env={
            "SWITCHBOARD_DINGTALK_API_BASE": ding.base_url,
            "SWITCHBOARD_DINGTALK_SESSION_WEBHOOK_PREFIXES": f"{ding.base_url}/",
        },
    ):
        yield


def test_stream_message_is_answered_on_its_session_webhook(
    worker: None,
    endpoint: Any,
    command: StreamCommand,
    stream_connector: Connector,
    gateway: FakeStreamGateway,
    ding: FakeDingTalk,
) -> None:
    data = robot_message(text=" What are your opening hours?", sender_staff_id="staff-7")
    data["sessionWebhook"] = ding.session_webhook_url("stream-session")
    frame_id = gateway.push_robot_message(data, client_id=stream_connector.app_key)
    assert_ok_ack(gateway.wait_for_ack(frame_id, timeout=WAIT_S), frame_id)

    [sent] = ding.wait_for_sent(1, timeout=REPLY_WAIT_S)
    assert sent.via == "session_webhook" and sent.session == "stream-session"
    assert "simulated" in sent.text and "What are your opening hours?" in sent.text
    [question] = inbound(data["msgId"])
    reply = wait_until(
        lambda: Message.objects.filter(reply_to=question, status="delivered").first(),
        timeout=REPLY_WAIT_S,
        what="the reply to be marked delivered",
    )
    assert reply.text == sent.text
    assert reply.endpoint_id == endpoint.pk


def test_dropped_socket_reconnects_and_loses_nothing_acknowledged(
    command: StreamCommand, stream_connector: Connector, gateway: FakeStreamGateway
) -> None:
    app = stream_connector.app_key
    before = [robot_message(text=f" before {n}") for n in range(3)]
    for data in before:
        frame_id = gateway.push_robot_message(data, client_id=app)
        assert_ok_ack(gateway.wait_for_ack(frame_id, timeout=WAIT_S), frame_id)
    opens = len(successful_opens(gateway, app))

    assert gateway.drop_connections(app) == 1
    during = robot_message(text=" during the outage")  # the fake holds it until reconnect
    during_id = gateway.push_robot_message(during, client_id=app)
    wait_until(
        lambda: len(successful_opens(gateway, app)) > opens and gateway.live_connections(app) == 1,
        timeout=WAIT_S,
        what="the command to reconnect with a fresh ticket",
    )
    after = robot_message(text=" after the reconnect")
    after_id = gateway.push_robot_message(after, client_id=app)

    assert_ok_ack(gateway.wait_for_ack(during_id, timeout=WAIT_S), during_id)
    assert_ok_ack(gateway.wait_for_ack(after_id, timeout=WAIT_S), after_id)
    for data in [*before, during, after]:
        assert len(inbound(data["msgId"])) == 1, data["text"]
    assert Message.objects.filter(direction="in").count() == 5
    assert command.alive()


def test_enabling_disabling_and_rotating_the_secret_apply_without_a_restart(
    command: StreamCommand, stream_connector: Connector, gateway: FakeStreamGateway
) -> None:
    app = stream_connector.app_key
    connectors = Connector.objects.filter(pk=stream_connector.pk)

    connectors.update(enabled=False)
    wait_until(
        lambda: gateway.live_connections(app) == 0,
        timeout=WAIT_S,
        what="the disabled connector's connection to close",
    )
    held = robot_message(text=" while disabled")
    held_id = gateway.push_robot_message(held, client_id=app)  # nobody connected: queued
    assert gateway.acks_for(held_id) == [] and inbound(held["msgId"]) == []

    connectors.update(enabled=True)
    wait_for_live(gateway, app, command)
    assert_ok_ack(gateway.wait_for_ack(held_id, timeout=WAIT_S), held_id)
    assert len(inbound(held["msgId"])) == 1

    new_secret = f"rotated-{uuid.uuid4().hex}"
    gateway.register_app(app, new_secret)  # the old secret stops working at once
    stream_connector.secret = new_secret
    stream_connector.save(update_fields=["secret"])
    wait_until(
        lambda: (
            any(c.client_secret == new_secret for c in successful_opens(gateway, app))
            and gateway.live_connections(app) == 1
        ),
        timeout=WAIT_S,
        what="a reconnect with the rotated secret",
    )
    rotated = robot_message(text=" after rotation")
    rotated_id = gateway.push_robot_message(rotated, client_id=app)
    assert_ok_ack(gateway.wait_for_ack(rotated_id, timeout=WAIT_S), rotated_id)
    assert len(inbound(rotated["msgId"])) == 1
    assert command.alive()


def test_sigterm_stops_the_command_cleanly(
    command: StreamCommand, stream_connector: Connector, gateway: FakeStreamGateway
) -> None:
    data = robot_message(text=" last words")
    frame_id = gateway.push_robot_message(data, client_id=stream_connector.app_key)
    assert_ok_ack(gateway.wait_for_ack(frame_id, timeout=WAIT_S), frame_id)

    command.process.send_signal(signal.SIGTERM)
    assert command.process.wait(timeout=WAIT_S) == 0, command.output()
    assert STOPPED_LINE in command.output()
    wait_until(
        lambda: gateway.live_connections(stream_connector.app_key) == 0,
        timeout=WAIT_S,
        what="the gateway to see the connection closed",
    )
    assert len(inbound(data["msgId"])) == 1


def test_sigterm_during_a_store_finishes_it_and_acks_before_exiting(
    command: StreamCommand, stream_connector: Connector, gateway: FakeStreamGateway
) -> None:
    table = Message._meta.db_table
    data = robot_message(text=" caught mid-store")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f'LOCK TABLE "{table}" IN EXCLUSIVE MODE')
        frame_id = gateway.push_robot_message(data, client_id=stream_connector.app_key)
        wait_until(
            lambda: blocked_inserts(cursor, table) > 0,
            timeout=WAIT_S,
            what="the command to block storing the message",
        )
        command.process.send_signal(signal.SIGTERM)
        wait_until(
            lambda: STOPPING_LINE in command.output(),
            timeout=WAIT_S,
            what="the command to start stopping",
        )
        assert command.alive() and gateway.acks_for(frame_id) == []
    assert command.process.wait(timeout=WAIT_S) == 0, command.output()
    assert_ok_ack(gateway.wait_for_ack(frame_id, timeout=WAIT_S), frame_id)
    assert len(inbound(data["msgId"])) == 1
