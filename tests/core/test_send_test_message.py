"""`manage.py send_test_message` against the real ingress (`live_server`, real HTTP)."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from connectors.webhook import Profile
from switchboard.bots import services
from switchboard.bots.models import Connector
from switchboard.conversations.models import Message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("purge_queues")]


def send_test_message(connector_id: str, base_url: str, *args: str, **options: Any) -> list[str]:
    """Run the command; returns its output lines (request line, HTTP status, answer)."""
    out = io.StringIO()
    call_command(
        "send_test_message",
        options.pop("text", "hello from the test"),
        *args,
        connector=connector_id,
        base_url=base_url,
        timeout=30,
        stdout=out,
        **options,
    )
    return out.getvalue().splitlines()


def _webhook(bot: Any, profile: Profile) -> Connector:
    connector = services.connector_create_webhook(bot=bot, name=f"{profile} hook")
    connector.verification_profile = profile
    connector.save(update_fields=["verification_profile"])
    return connector


@pytest.mark.parametrize("profile", list(Profile))
def test_signed_webhook_test_message_is_accepted(bot, live_server, profile):
    connector = _webhook(bot, profile)
    lines = send_test_message(
        str(connector.pk), live_server.url, text="ping", user="ops", conversation="check-1"
    )
    assert lines[0] == f"POST {live_server.url}/hooks/webhook/{connector.pk}/"
    assert lines[1] == "HTTP 202"
    answer = json.loads(lines[2])
    assert answer["duplicate"] is False
    message = Message.objects.get(pk=answer["id"])
    assert (message.connector_id, message.text, message.status) == (
        connector.pk,
        "ping",
        "received",
    )
    assert message.conversation.external_key == "conv:check-1"
    assert message.conversation.end_user.external_id == "ops"


def test_dingtalk_http_test_message_gets_the_empty_acknowledgement(bot, live_server):
    connector = services.connector_create_dingtalk(
        bot=bot, name="DT", app_key="ding-app", app_secret="dt-secret", robot_code="ding-robot"
    )
    lines = send_test_message(str(connector.pk), live_server.url, text="你好")
    assert lines[1] == "HTTP 200"
    assert json.loads(lines[2]) == {"msgtype": "empty"}
    message = Message.objects.get(connector=connector, direction="in")
    assert message.text == "你好"


def test_aligenie_test_message_gets_a_spoken_answer(bot, live_server):
    # No worker runs here, so the answer is "still thinking" once the short budget is spent.
    connector = services.connector_create_aligenie(
        bot=bot, name="Genie", skill_id=4242, voice_budget_ms=200
    )
    lines = send_test_message(str(connector.pk), live_server.url, text="现在几点")
    assert lines[1] == "HTTP 200"
    answer = json.loads(lines[2])
    assert answer["returnCode"] == "0"
    assert answer["returnValue"]["resultType"] in {"ASK_INF", "RESULT"}
    assert answer["returnValue"]["reply"]
    assert Message.objects.filter(
        connector=connector, direction="in", text__contains="现在几点"
    ).exists()


def test_aligenie_test_message_is_encrypted_when_the_connector_has_a_key(bot, live_server):
    connector = services.connector_create_aligenie(
        bot=bot, name="Genie", skill_id=4242, voice_budget_ms=200
    )
    services.connector_generate_keypair(connector=connector)
    lines = send_test_message(str(connector.pk), live_server.url, text="encrypted hello")
    assert lines[1] == "HTTP 200"
    assert json.loads(lines[2])["returnValue"]["resultType"] in {"ASK_INF", "RESULT"}
    assert Message.objects.filter(connector=connector, text__contains="encrypted hello").exists()


def test_stream_mode_connector_is_a_clear_error(bot, live_server):
    connector = services.connector_create_dingtalk(
        bot=bot, name="S", app_key="k", app_secret="s", mode=Connector.DingTalkMode.STREAM
    )
    with pytest.raises(CommandError, match=r"Stream mode.*dingtalk_stream"):
        send_test_message(str(connector.pk), live_server.url)
    assert not Message.objects.exists()


def test_unknown_connector_id_is_a_clear_error(db, live_server):
    missing = str(uuid.uuid4())
    with pytest.raises(CommandError, match=f"no connector {missing}"):
        send_test_message(missing, live_server.url)


def test_connector_id_that_is_not_a_uuid_is_a_clear_error(db, live_server):
    with pytest.raises(CommandError, match="'orders' is not a connector id"):
        send_test_message("orders", live_server.url)


def test_refused_test_message_fails_the_command(bot, live_server):
    connector = _webhook(bot, Profile.STANDARD)
    Connector.objects.filter(pk=connector.pk).update(enabled=False)
    with pytest.raises(CommandError, match="refused"):
        send_test_message(str(connector.pk), live_server.url)
    assert not Message.objects.exists()


def test_unreachable_server_is_a_clear_error(connector):
    from tests.support.processes import free_port

    with pytest.raises(CommandError, match="cannot reach"):
        send_test_message(str(connector.pk), f"http://127.0.0.1:{free_port()}")
