"""Admission: MAU exactness, hard/soft enforcement, rate limits, quotas, Redis loss.

Messages go through `message_receive`, the one path every ingress uses, against the real
PostgreSQL and Redis. Generation is not enqueued anywhere that matters: these tests look
at what admission stored and decided.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
import redis
from django.db import connection

from connectors.base import InboundMessage, RateLimited

pytestmark = pytest.mark.django_db


def inbound(user: str, *, channel: str = "webhook", text: str = "hello") -> InboundMessage:
    return InboundMessage(
        channel=channel,
        provider_message_id=uuid.uuid4().hex,
        user_id=user,
        conversation_key=f"{channel}:{user}",
        text=text,
    )


def receive(connector: Any, message: InboundMessage, at: datetime | None = None) -> Any:
    from switchboard.conversations.services import message_receive

    if at is None:
        return message_receive(connector=connector, inbound=message).message
    with mock.patch("django.utils.timezone.now", return_value=at):
        return message_receive(connector=connector, inbound=message).message


def mau(tenant: Any, month: date | None = None) -> tuple[int, int, int]:
    from switchboard.metering.admission import month_of
    from switchboard.metering.models import MauCounter

    month = month or month_of(datetime.now(tz=UTC))
    row = MauCounter.objects.filter(tenant=tenant, month=month).first()
    return (row.active, row.over_limit, row.refused) if row else (0, 0, 0)


def truth(tenant: Any, month: date) -> int:
    """MAU recomputed from what was stored: distinct (channel, user) with an admitted
    inbound message in the month."""
    from switchboard.conversations.models import Message

    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    end = datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)
    return (
        Message.objects.filter(
            tenant=tenant, direction="in", created_at__gte=start, created_at__lt=end
        )
        .exclude(status="refused")
        .values("conversation__end_user__channel", "conversation__end_user__external_id")
        .distinct()
        .count()
    )


@pytest.fixture
def dingtalk_connector(bot: Any) -> Any:
    from switchboard.bots.services import connector_create_dingtalk

    return connector_create_dingtalk(bot=bot, name="DT", app_key="k", app_secret="s")


def test_mau_counts_each_channel_identity_once_across_bots_and_connectors(
    tenant: Any, connector: Any, dingtalk_connector: Any, licence_for: Callable[..., Any]
) -> None:
    from switchboard.bots.services import bot_create, connector_create_webhook
    from switchboard.metering.admission import month_of

    licence_for(tenant, mau_limit=100)
    other_bot = bot_create(tenant=tenant, name="Other")
    other = connector_create_webhook(bot=other_bot, name="Other hook")
    for _ in range(3):
        receive(connector, inbound("alice"))
    receive(other, inbound("alice"))  # same person, another bot of the tenant
    receive(dingtalk_connector, inbound("alice", channel="dingtalk"))  # another identity
    receive(connector, inbound("bob"))
    month = month_of(datetime.now(tz=UTC))
    assert mau(tenant) == (3, 0, 0)
    assert truth(tenant, month) == 3


def test_mau_starts_again_each_calendar_month_utc(
    tenant: Any, connector: Any, licence_for: Callable[..., Any]
) -> None:
    licence_for(tenant, mau_limit=100)
    # 23:59 UTC on 30 November is already December in Beijing, but not in MAU terms.
    late_november = datetime(2026, 11, 30, 23, 59, 30, tzinfo=UTC)
    early_december = datetime(2026, 12, 1, 0, 0, 30, tzinfo=UTC)
    receive(connector, inbound("alice"), at=late_november)
    receive(connector, inbound("bob"), at=late_november)
    receive(connector, inbound("alice"), at=early_december)
    receive(connector, inbound("alice"), at=early_december + timedelta(hours=1))
    assert mau(tenant, date(2026, 11, 1)) == (2, 0, 0)
    assert mau(tenant, date(2026, 12, 1)) == (1, 0, 0)
    assert truth(tenant, date(2026, 11, 1)) == 2
    assert truth(tenant, date(2026, 12, 1)) == 1


def test_a_user_counted_this_month_costs_no_metering_write(
    tenant: Any, connector: Any, licence_for: Callable[..., Any]
) -> None:
    from django.test.utils import CaptureQueriesContext

    licence_for(tenant, mau_limit=100)
    receive(connector, inbound("alice"))
    with CaptureQueriesContext(connection) as first_again:
        receive(connector, inbound("alice"))
    metering = [q["sql"] for q in first_again.captured_queries if "metering_" in q["sql"]]
    assert metering == []
    with CaptureQueriesContext(connection) as new_user:
        receive(connector, inbound("bob"))
    assert any("metering_monthlyactiveuser" in q["sql"] for q in new_user.captured_queries)


def test_hard_mode_refuses_new_users_beyond_the_limit_but_keeps_serving_existing(
    tenant: Any, bot: Any, connector: Any, licence_for: Callable[..., Any]
) -> None:
    from switchboard.conversations.models import Message

    licence_for(tenant, mau_limit=2, enforcement="hard")
    bot.language = "en"
    bot.save(update_fields=["language"])
    tenant.refusal_replies = {"mau_limit": {"en": "We are full, sorry."}}
    tenant.save(update_fields=["refusal_replies"])
    assert receive(connector, inbound("alice")).status == "received"
    assert receive(connector, inbound("bob")).status == "received"
    refused = receive(connector, inbound("carol"))
    assert refused.status == "refused"
    assert refused.refusal == "mau_limit"
    reply = Message.objects.get(reply_to=refused)
    assert reply.text == "We are full, sorry."
    assert reply.status == "pending"  # delivered through the channel like any reply
    # Existing users are still served, and carol was not counted.
    assert receive(connector, inbound("alice")).status == "received"
    assert mau(tenant) == (2, 0, 1)


def test_refusal_reply_defaults_to_the_bots_language(
    tenant: Any, bot: Any, connector: Any, licence_for: Callable[..., Any]
) -> None:
    from switchboard.conversations.models import Message
    from switchboard.licensing.replies import DEFAULTS

    licence_for(tenant, mau_limit=0)
    assert bot.language == "zh-hans"
    refused = receive(connector, inbound("alice"))
    assert Message.objects.get(reply_to=refused).text == DEFAULTS["mau_limit"]["zh-hans"]
    assert mau(tenant) == (0, 0, 1)


def test_soft_mode_serves_everyone_and_records_the_overage(
    tenant: Any, connector: Any, licence_for: Callable[..., Any]
) -> None:
    from switchboard.metering.models import MonthlyActiveUser

    licence_for(tenant, mau_limit=2, enforcement="soft")
    statuses = [receive(connector, inbound(f"user-{i}")).status for i in range(4)]
    assert statuses == ["received"] * 4
    assert mau(tenant) == (4, 2, 0)
    assert MonthlyActiveUser.objects.filter(tenant=tenant, over_limit=True).count() == 2


@pytest.mark.django_db(transaction=True)
def test_hard_mode_never_admits_more_than_the_limit_under_concurrency(
    tenant: Any, connector: Any, licence_for: Callable[..., Any]
) -> None:
    from django.db import connections

    from switchboard.metering.models import MonthlyActiveUser

    limit, users = 15, 48
    licence_for(tenant, mau_limit=limit, enforcement="hard")
    barrier = threading.Barrier(12)
    statuses: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(names: list[str]) -> None:
        try:
            barrier.wait(timeout=30)
            for name in names:
                status = receive(connector, inbound(name)).status
                with lock:
                    statuses.append(status)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    names = [f"new-{i}" for i in range(users)]
    threads = [threading.Thread(target=worker, args=(names[i::12],)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert statuses.count("received") == limit
    assert statuses.count("refused") == users - limit
    assert mau(tenant)[0] == limit
    assert MonthlyActiveUser.objects.filter(tenant=tenant).count() == limit


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_messages_of_one_user_count_once(
    tenant: Any, connector: Any, licence_for: Callable[..., Any]
) -> None:
    from django.db import connections

    licence_for(tenant, mau_limit=100)
    barrier = threading.Barrier(8)

    def worker() -> None:
        try:
            barrier.wait(timeout=30)
            receive(connector, inbound("alice"))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert mau(tenant) == (1, 0, 0)


def test_model_mau_counts_the_installation_per_served_model(
    tenant: Any,
    connector: Any,
    licence_for: Callable[..., Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    from switchboard.metering.admission import month_of
    from switchboard.metering.models import ModelMauCounter
    from switchboard.tenants.models import Tenant

    licence_for(tenant, mau_limit=100)
    # The installation-wide counter moves after commit, in its own transaction.
    with django_capture_on_commit_callbacks(execute=True):
        receive(connector, inbound("alice"))
        receive(connector, inbound("bob"))
        receive(connector, inbound("alice"))
    month = month_of(datetime.now(tz=UTC))
    model = connector.bot.model_name
    before = ModelMauCounter.objects.get(model_name=model, month=month).active
    assert before >= 2
    # A second tenant's users add to the same model's installation-wide count.
    from switchboard.bots.services import bot_create, connector_create_webhook

    other = Tenant.objects.create(name="Other", slug=f"other-{uuid.uuid4().hex[:6]}")
    licence_for(other, mau_limit=100)
    hook = connector_create_webhook(bot=bot_create(tenant=other, name="B"), name="H")
    with django_capture_on_commit_callbacks(execute=True):
        receive(hook, inbound("alice"))
    assert ModelMauCounter.objects.get(model_name=model, month=month).active == before + 1
    # The counter is a cache of the rows: a rebuild recounts it.
    from switchboard.metering.admission import model_mau_rebuild
    from switchboard.metering.models import ModelActiveUser

    ModelMauCounter.objects.filter(model_name=model, month=month).update(active=0)
    model_mau_rebuild(month=month)
    assert ModelMauCounter.objects.get(model_name=model, month=month).active == (
        ModelActiveUser.objects.filter(model_name=model, month=month).count()
    )


def test_user_counted_again_when_a_bot_of_another_model_answers(
    tenant: Any, connector: Any, licence_for: Callable[..., Any]
) -> None:
    from switchboard.bots.services import bot_create, connector_create_webhook
    from switchboard.metering.models import ModelActiveUser

    licence_for(tenant, mau_limit=100)
    llama = bot_create(tenant=tenant, name="Llama", model_name="meta-llama/Llama-2-7b-chat-hf")
    hook = connector_create_webhook(bot=llama, name="Llama hook")
    receive(connector, inbound("alice"))
    receive(hook, inbound("alice"))
    receive(hook, inbound("alice"))
    models = set(
        ModelActiveUser.objects.filter(
            end_user__external_id="alice", end_user__tenant=tenant
        ).values_list("model_name", flat=True)
    )
    assert models == {connector.bot.model_name, "meta-llama/Llama-2-7b-chat-hf"}
    assert mau(tenant)[0] == 1  # still one user for the tenant's own licence


def test_alerts_fire_once_per_threshold(
    tenant: Any, connector: Any, licence_for: Callable[..., Any]
) -> None:
    from switchboard.metering import alerts
    from switchboard.metering.models import Alert

    licence_for(tenant, mau_limit=10, enforcement="soft")
    for i in range(7):
        receive(connector, inbound(f"u{i}"))
    assert not Alert.objects.filter(tenant=tenant).exists()
    receive(connector, inbound("u7"))  # 8 of 10
    assert list(
        Alert.objects.filter(tenant=tenant).values_list("threshold_percent", flat=True)
    ) == [80]
    alerts.cache_clear()  # another process would not know; the constraint still decides
    receive(connector, inbound("u8"))  # 9
    receive(connector, inbound("u9"))  # 10
    receive(connector, inbound("u10"))  # 11, soft: served
    receive(connector, inbound("u0"))  # counted already
    fired = sorted(Alert.objects.filter(tenant=tenant).values_list("threshold_percent", flat=True))
    assert fired == [80, 90, 100]
    alert = Alert.objects.get(tenant=tenant, threshold_percent=100)
    assert (alert.value, alert.limit) == (10, 10)


def test_model_licence_threshold_alert_goes_to_the_operator(
    tenant: Any,
    connector: Any,
    licence_for: Callable[..., Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    from switchboard.licensing.models import ModelLicence
    from switchboard.metering import alerts
    from switchboard.metering.models import Alert

    licence_for(tenant, mau_limit=100)
    model = connector.bot.model_name
    assert ModelLicence.objects.get(model_name=model).mau_threshold == 100_000_000
    ModelLicence.objects.filter(model_name=model).update(mau_threshold=2)
    alerts.cache_clear()
    with django_capture_on_commit_callbacks(execute=True):
        receive(connector, inbound("alice"))
        receive(connector, inbound("bob"))
    operator = Alert.objects.filter(tenant__isnull=True, model_name=model)
    assert sorted(operator.values_list("threshold_percent", flat=True)) == [80, 90, 100]
    assert "commercial licence" in operator.first().message


def test_rate_limit_per_end_user_answers_with_the_channels_slow_down_reply(
    tenant: Any, bot: Any, dingtalk_connector: Any, licence_for: Callable[..., Any]
) -> None:
    from switchboard.conversations.models import Message
    from switchboard.licensing.replies import DEFAULTS

    licence_for(tenant, user_messages_per_minute=3, tenant_messages_per_minute=100)
    statuses = [
        receive(dingtalk_connector, inbound("alice", channel="dingtalk")).status for _ in range(5)
    ]
    assert statuses == ["received"] * 3 + ["refused"] * 2
    refused = Message.objects.filter(tenant=tenant, status="refused").first()
    assert refused.refusal == "rate_limited"
    assert Message.objects.get(reply_to=refused).text == DEFAULTS["rate_limited"]["zh-hans"]
    # Another user of the same tenant is not slowed down by alice.
    assert receive(dingtalk_connector, inbound("bob", channel="dingtalk")).status == "received"


def test_rate_limit_per_tenant_covers_all_its_users(
    tenant: Any, connector: Any, dingtalk_connector: Any, licence_for: Callable[..., Any]
) -> None:
    licence_for(tenant, tenant_messages_per_minute=4)
    statuses = [
        receive(dingtalk_connector, inbound(f"u{i}", channel="dingtalk")).status for i in range(6)
    ]
    assert statuses == ["received"] * 4 + ["refused"] * 2


def test_webhook_over_its_rate_limit_gets_429_and_nothing_is_stored(
    tenant: Any, connector: Any, licence_for: Callable[..., Any]
) -> None:
    from switchboard.conversations.models import EndUser, Message

    licence_for(tenant, user_messages_per_minute=1)
    receive(connector, inbound("alice"))
    before = (Message.objects.count(), EndUser.objects.count())
    with pytest.raises(RateLimited) as raised:
        receive(connector, inbound("alice"))
    assert 1 <= raised.value.retry_after_s <= 60
    assert (Message.objects.count(), EndUser.objects.count()) == before


@pytest.fixture
def bill(django_capture_on_commit_callbacks: Any) -> Callable[..., None]:
    """Append a usage record and run what its commit triggers (the quota counter)."""
    from switchboard.metering import ledger

    def record(inbound: Any, bot: Any, tokens: int) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            ledger.usage_record(inbound=inbound, bot=bot, outcome="ok", prompt_tokens=tokens)

    return record


def test_monthly_token_quota_refuses_once_used_up(
    tenant: Any,
    bot: Any,
    dingtalk_connector: Any,
    licence_for: Callable[..., Any],
    bill: Callable[..., None],
) -> None:
    licence_for(tenant, monthly_tokens=1000)
    first = receive(dingtalk_connector, inbound("alice", channel="dingtalk"))
    bill(first, bot, 950)
    assert receive(dingtalk_connector, inbound("alice", channel="dingtalk")).status == "received"
    bill(first, bot, 50)
    refused = receive(dingtalk_connector, inbound("alice", channel="dingtalk"))
    assert (refused.status, refused.refusal) == ("refused", "quota_exhausted")


def test_connector_kind_outside_the_licence_is_refused(
    tenant: Any, dingtalk_connector: Any, licence_for: Callable[..., Any]
) -> None:
    licence_for(tenant, connector_kinds=["webhook"])
    refused = receive(dingtalk_connector, inbound("alice", channel="dingtalk"))
    assert (refused.status, refused.refusal) == ("refused", "connector_not_licensed")
    assert mau(tenant) == (0, 0, 0)


def test_redis_flushed_mid_month_keeps_counts_and_limits_right(
    tenant: Any,
    bot: Any,
    dingtalk_connector: Any,
    licence_for: Callable[..., Any],
    redis_client: redis.Redis,
    bill: Callable[..., None],
) -> None:
    from switchboard.metering.admission import READY_KEY

    licence_for(
        tenant, mau_limit=3, user_messages_per_minute=3, monthly_tokens=1000, enforcement="hard"
    )
    first = None
    for name in ("alice", "bob", "carol"):
        first = receive(dingtalk_connector, inbound(name, channel="dingtalk"))
    receive(dingtalk_connector, inbound("alice", channel="dingtalk"))
    receive(dingtalk_connector, inbound("alice", channel="dingtalk"))
    bill(first, bot, 990)

    redis_client.flushdb()  # Redis keeps nothing on disk: a restart looks like this
    assert not redis_client.exists(READY_KEY)

    # MAU lives in PostgreSQL: a fourth user is still refused, existing ones served...
    assert receive(dingtalk_connector, inbound("dave", channel="dingtalk")).refusal == "mau_limit"
    assert mau(tenant)[0] == 3
    # ...alice's rate window was rebuilt from the stored messages (3 in this minute)...
    assert receive(dingtalk_connector, inbound("alice", channel="dingtalk")).refusal == (
        "rate_limited"
    )
    assert redis_client.exists(READY_KEY)
    # ...and the month's tokens from the ledger: 990 used, 10 left.
    assert receive(dingtalk_connector, inbound("bob", channel="dingtalk")).status == "received"
    bill(first, bot, 10)
    assert receive(dingtalk_connector, inbound("bob", channel="dingtalk")).refusal == (
        "quota_exhausted"
    )


def test_redis_down_still_admits_on_postgresql(
    tenant: Any, connector: Any, licence_for: Callable[..., Any]
) -> None:
    from django.test import override_settings

    from switchboard.metering import admission

    licence_for(tenant, mau_limit=1, user_messages_per_minute=1)
    admission.redis_reset()
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        assert receive(connector, inbound("alice")).status == "received"
        assert receive(connector, inbound("bob")).refusal == "mau_limit"
    admission.redis_reset()


def test_mau_rebuild_recomputes_counters_from_the_rows(
    tenant: Any, connector: Any, licence_for: Callable[..., Any]
) -> None:
    from switchboard.metering.admission import mau_rebuild, month_of
    from switchboard.metering.models import MauCounter

    licence_for(tenant, mau_limit=100)
    for name in ("a", "b", "c"):
        receive(connector, inbound(name))
    month = month_of(datetime.now(tz=UTC))
    MauCounter.objects.filter(tenant=tenant, month=month).update(active=99)
    mau_rebuild(tenant_id=tenant.pk, month=month)
    assert mau(tenant)[0] == 3


def test_daily_and_rolling_actives_are_estimated_from_redis(
    tenant: Any, connector: Any, licence_for: Callable[..., Any]
) -> None:
    from switchboard.metering.admission import daily_actives, rolling_actives

    licence_for(tenant, mau_limit=1000)
    today = datetime.now(tz=UTC)
    yesterday = today - timedelta(days=1)
    for i in range(20):
        receive(connector, inbound(f"u{i}"), at=yesterday)
    for i in range(10, 40):
        receive(connector, inbound(f"u{i}"), at=today)
    assert daily_actives(tenant.pk, today.date()) == 30
    assert daily_actives(tenant.pk, yesterday.date()) == 20
    assert rolling_actives(tenant.pk, today.date()) == 40
