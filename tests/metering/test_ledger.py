"""The usage ledger: one append-only row per inference call, failures included."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction

from connectors.base import InboundMessage
from tests.support.processes import free_port

pytestmark = pytest.mark.django_db


def _receive(connector: Any, text: str = "hello") -> Any:
    from switchboard.conversations.services import message_receive

    inbound = InboundMessage(
        channel="webhook",
        provider_message_id=uuid.uuid4().hex,
        user_id="alice",
        conversation_key="c-1",
        text=text,
    )
    return message_receive(connector=connector, inbound=inbound).message


def test_a_failed_call_is_recorded_with_its_outcome(connector: Any) -> None:
    from inference import InferenceError
    from switchboard.conversations.services import message_generate_reply
    from switchboard.metering.models import UsageRecord
    from switchboard.pool.models import InferenceEndpoint

    InferenceEndpoint.objects.create(name="dead", url=f"http://127.0.0.1:{free_port()}")
    message = _receive(connector)
    with pytest.raises(InferenceError):
        message_generate_reply(message_id=str(message.pk))
    [record] = UsageRecord.objects.filter(message_id=message.pk)
    assert record.outcome == "error"
    assert (record.prompt_tokens, record.completion_tokens) == (0, 0)
    assert record.tenant_id == connector.tenant_id and record.bot_id == connector.bot_id
    message.refresh_from_db()
    assert message.status == "received"  # left for the task's retry


def test_usage_records_cannot_be_changed_or_deleted(connector: Any) -> None:
    from switchboard.core.appendonly import AppendOnlyError
    from switchboard.metering import ledger
    from switchboard.metering.models import UsageRecord

    message = _receive(connector)
    record = ledger.usage_record(
        inbound=message, bot=connector.bot, outcome="ok", prompt_tokens=5, completion_tokens=7
    )
    record.prompt_tokens = 1
    with pytest.raises(AppendOnlyError):
        record.save()
    with pytest.raises(AppendOnlyError):
        record.delete()
    for sql in (
        "UPDATE metering_usagerecord SET prompt_tokens = 1 WHERE id = %s",
        "DELETE FROM metering_usagerecord WHERE id = %s",
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            connection.cursor().execute(sql, [record.pk])
    assert UsageRecord.objects.get(pk=record.pk).prompt_tokens == 5
