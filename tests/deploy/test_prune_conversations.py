"""`prune_conversations`: retention by idle time, per installation or tenant; the usage
ledger, MAU records and end users are never touched."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.utils import timezone

from switchboard.bots.models import Connector
from switchboard.conversations.models import Conversation, DeliveryAttempt, EndUser, Message
from switchboard.metering.models import MonthlyActiveUser, UsageRecord
from switchboard.tenants.models import Tenant

pytestmark = pytest.mark.django_db

OLD = 100  # days ago


def _prune(*args: str) -> str:
    out = StringIO()
    call_command("prune_conversations", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def _conversation(
    connector: Connector, *, days_ago: int, statuses: tuple[str, ...] = ("replied", "delivered")
) -> Conversation:
    """A conversation whose messages (and so last activity) are `days_ago` old, with a
    delivery log, a usage record per inbound message and the end user's MAU row."""
    at = timezone.now() - timedelta(days=days_ago)
    user = EndUser.objects.create(
        tenant_id=connector.tenant_id, channel="webhook", external_id=uuid.uuid4().hex
    )
    conversation = Conversation.objects.create(
        tenant_id=connector.tenant_id,
        bot=connector.bot,
        connector=connector,
        end_user=user,
        external_key=uuid.uuid4().hex,
    )
    inbound = Message.objects.create(
        tenant_id=connector.tenant_id,
        conversation=conversation,
        connector=connector,
        direction=Message.Direction.INBOUND,
        text="hello",
        provider_message_id=uuid.uuid4().hex,
        status=statuses[0],
    )
    outbound = Message.objects.create(
        tenant_id=connector.tenant_id,
        conversation=conversation,
        connector=connector,
        direction=Message.Direction.OUTBOUND,
        text="hi",
        reply_to=inbound,
        status=statuses[1],
    )
    DeliveryAttempt.objects.create(
        tenant_id=connector.tenant_id,
        message=outbound,
        connector=connector,
        attempt=1,
        outcome=DeliveryAttempt.Outcome.DELIVERED,
        via="callback",
    )
    UsageRecord.objects.create(
        tenant_id=connector.tenant_id,
        bot_id=connector.bot_id,
        connector_id=connector.pk,
        end_user_id=user.pk,
        message_id=inbound.pk,
        prompt_tokens=10,
        completion_tokens=5,
        outcome=UsageRecord.Outcome.OK,
        created_at=at,
    )
    MonthlyActiveUser.objects.create(
        tenant_id=connector.tenant_id, month=date(at.year, at.month, 1), end_user=user
    )
    # auto_now_add fields, moved back in time.
    Message.objects.filter(conversation=conversation).update(created_at=at)
    Conversation.objects.filter(pk=conversation.pk).update(created_at=at, last_message_at=at)
    return conversation


def _exists(conversation: Conversation) -> bool:
    return Conversation.objects.filter(pk=conversation.pk).exists()


@pytest.fixture
def other_connector(connector: Connector) -> Connector:
    from switchboard.bots.services import bot_create, connector_create_webhook

    tenant = Tenant.objects.create(name="Other", slug=f"other-{uuid.uuid4().hex[:8]}")
    bot = bot_create(tenant=tenant, name="B", system_prompt="S")
    return connector_create_webhook(bot=bot, name="W", callback_url="https://example.com/cb")


def test_deletes_idle_conversations_and_keeps_ledger_and_mau(connector: Connector) -> None:
    old = _conversation(connector, days_ago=OLD)
    recent = _conversation(connector, days_ago=1)
    ledger, mau = UsageRecord.objects.count(), MonthlyActiveUser.objects.count()
    old_messages = list(Message.objects.filter(conversation=old).values_list("pk", flat=True))

    output = _prune("--days", "30")

    assert not _exists(old) and _exists(recent)
    assert not Message.objects.filter(pk__in=old_messages).exists()
    assert not DeliveryAttempt.objects.filter(message_id__in=old_messages).exists()
    assert Message.objects.filter(conversation=recent).count() == 2
    # Billing and licence counts are untouched.
    assert UsageRecord.objects.count() == ledger
    assert UsageRecord.objects.filter(message_id__in=old_messages).count() == 1
    assert MonthlyActiveUser.objects.count() == mau
    assert EndUser.objects.filter(tenant_id=connector.tenant_id).count() == 2
    assert "deleted 1 conversation(s), 2 message(s)" in output
    # Nothing left to do the second time.
    assert "deleted 0 conversation(s)" in _prune("--days", "30")


def test_dry_run_counts_and_deletes_nothing(connector: Connector) -> None:
    old = _conversation(connector, days_ago=OLD)
    output = _prune("--days", "30", "--dry-run")
    assert "would delete 1 conversation(s), 2 message(s)" in output
    assert _exists(old)
    assert Message.objects.filter(conversation=old).count() == 2


def test_a_recent_message_or_open_work_keeps_a_conversation(connector: Connector) -> None:
    late_reply = _conversation(connector, days_ago=OLD)
    # The reply came much later than the question (a long delivery retry, say).
    Message.objects.filter(conversation=late_reply, direction="out").update(
        created_at=timezone.now()
    )
    pending = _conversation(connector, days_ago=OLD, statuses=("replied", "pending"))
    unanswered = _conversation(connector, days_ago=OLD, statuses=("received", "pending"))
    _prune("--days", "30")
    assert _exists(late_reply) and _exists(pending) and _exists(unanswered)


def test_retention_comes_from_settings_per_tenant(
    connector: Connector, other_connector: Connector
) -> None:
    ours = _conversation(connector, days_ago=OLD)
    theirs = _conversation(other_connector, days_ago=OLD)
    slug = connector.tenant.slug
    # Installation default: keep forever.
    with override_settings(SWITCHBOARD_RETENTION_DAYS=0):
        assert "kept forever" in _prune()
    assert _exists(ours) and _exists(theirs)
    # One tenant with 30 days, the rest with the default (forever).
    with override_settings(
        SWITCHBOARD_RETENTION_DAYS=0, SWITCHBOARD_RETENTION_DAYS_BY_TENANT=[f"{slug}=30"]
    ):
        _prune()
    assert not _exists(ours) and _exists(theirs)
    # An installation default of 90 days; a tenant kept forever by its own 0.
    kept = _conversation(connector, days_ago=OLD)
    with override_settings(
        SWITCHBOARD_RETENTION_DAYS=90, SWITCHBOARD_RETENTION_DAYS_BY_TENANT=[f"{slug}=0"]
    ):
        _prune()
    assert _exists(kept) and not _exists(theirs)


def test_tenant_option_limits_the_run(connector: Connector, other_connector: Connector) -> None:
    ours = _conversation(connector, days_ago=OLD)
    theirs = _conversation(other_connector, days_ago=OLD)
    _prune("--days", "30", "--tenant", other_connector.tenant.slug)
    assert _exists(ours) and not _exists(theirs)


def test_batches_delete_everything_eligible(connector: Connector) -> None:
    olds = [_conversation(connector, days_ago=OLD) for _ in range(5)]
    output = _prune("--days", "30", "--batch-size", "2")
    assert not any(_exists(c) for c in olds)
    assert "deleted 5 conversation(s), 10 message(s)" in output


@pytest.mark.parametrize(
    ("args", "setting", "message"),
    [
        (["--days", "0"], [], "--days must be at least 1"),
        (["--tenant", "no-such-tenant"], [], "no tenant with slug"),
        ([], ["acme"], "is not slug=days"),
        ([], ["acme=forever"], "is not slug=days"),
    ],
)
def test_bad_input_is_refused(
    connector: Connector, args: list[str], setting: list[str], message: str
) -> None:
    old = _conversation(connector, days_ago=OLD)
    with (
        override_settings(
            SWITCHBOARD_RETENTION_DAYS=30, SWITCHBOARD_RETENTION_DAYS_BY_TENANT=setting
        ),
        pytest.raises(CommandError, match=message),
    ):
        _prune(*args)
    assert _exists(old)


def test_unknown_tenant_in_settings_is_reported(connector: Connector) -> None:
    err = StringIO()
    with override_settings(SWITCHBOARD_RETENTION_DAYS_BY_TENANT=["gone=30"]):
        call_command("prune_conversations", stdout=StringIO(), stderr=err)
    assert "gone" in err.getvalue()


def test_beat_runs_the_retention_policy_daily(connector: Connector) -> None:
    from django.conf import settings

    from switchboard.core.tasks import prune_conversations

    entry = settings.CELERY_BEAT_SCHEDULE["prune-conversations"]
    assert entry["task"] == prune_conversations.name
    assert entry["schedule"] == 24 * 3600
    old = _conversation(connector, days_ago=OLD)
    with override_settings(SWITCHBOARD_RETENTION_DAYS=0):
        assert "deleted 0 conversation(s)" in prune_conversations()
    assert _exists(old)  # off by default: nothing is deleted without a policy
    with override_settings(SWITCHBOARD_RETENTION_DAYS=30):
        assert prune_conversations() == "in all: deleted 1 conversation(s), 2 message(s)"
    assert not _exists(old)
