"""Console delivery log (tenant): outbound replies, every attempt, filters and replay."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.test import Client
from django.utils import timezone

pytestmark = pytest.mark.django_db

LIST = "/console/deliveries/"


def _connector(tenant: Any, name: str, kind: str = "webhook") -> Any:
    from switchboard.bots.models import Connector
    from switchboard.bots.services import bot_create, connector_create_webhook

    bot = bot_create(tenant=tenant, name=f"{name} bot")
    if kind == "webhook":
        return connector_create_webhook(
            bot=bot, name=name, callback_url="https://hooks.example.com/cb"
        )
    return Connector.objects.create(tenant=tenant, bot=bot, kind=kind, name=name)


def _reply(connector: Any, text: str, *, status: str = "delivered", days_ago: int = 0) -> Any:
    """An inbound message and its outbound reply through `connector`."""
    from switchboard.conversations.models import Conversation, EndUser, Message

    key = uuid.uuid4().hex[:8]
    end_user = EndUser.objects.create(
        tenant_id=connector.tenant_id, channel=connector.kind, external_id=f"user-{key}"
    )
    conversation = Conversation.objects.create(
        tenant_id=connector.tenant_id,
        bot=connector.bot,
        connector=connector,
        end_user=end_user,
        external_key=f"conv-{key}",
    )
    common = {"tenant_id": connector.tenant_id, "conversation": conversation}
    inbound = Message.objects.create(
        **common,
        connector=connector,
        direction="in",
        text=f"question {key}",
        provider_message_id=f"p-{key}",
        status="replied",
    )
    reply = Message.objects.create(
        **common, connector=connector, direction="out", text=text, status=status, reply_to=inbound
    )
    if days_ago:
        Message.objects.filter(pk=reply.pk).update(
            created_at=timezone.now() - timedelta(days=days_ago)
        )
    return reply


def _attempt(reply: Any, attempt: int, outcome: str, **fields: Any) -> Any:
    from switchboard.conversations.models import DeliveryAttempt

    return DeliveryAttempt.objects.create(
        tenant_id=reply.tenant_id,
        message=reply,
        connector_id=reply.connector_id,
        attempt=attempt,
        outcome=outcome,
        via="callback",
        target="https://hooks.example.com/cb",
        **fields,
    )


@pytest.fixture
def hook(tenant: Any) -> Any:
    return _connector(tenant, "Orders")


@pytest.fixture
def failed_then_delivered(hook: Any) -> Any:
    reply = _reply(hook, "Your order shipped.")
    _attempt(
        reply,
        1,
        "retrying",
        http_status=503,
        latency_ms=812.4,
        response_excerpt="upstream down",
        error="HTTP 503",
    )
    _attempt(reply, 2, "delivered", http_status=200, latency_ms=41.0, response_excerpt="thanks")
    reply.attempts = 2
    reply.save()
    return reply


@pytest.fixture
def elsewhere(other_tenant: Any) -> Any:
    """A reply that belongs to another tenant."""
    return _reply(_connector(other_tenant, "Globex hook"), "Globex secret reply")


def test_list_shows_replies_with_their_last_attempt(
    viewer_of: Callable[[Any], Client], tenant: Any, failed_then_delivered: Any, elsewhere: Any
) -> None:
    page = viewer_of(tenant).get(LIST)

    assert page.status_code == 200
    html = page.content.decode()
    assert "Your order shipped." in html and "Orders" in html
    assert f"{LIST}{failed_then_delivered.pk}/" in html
    assert "HTTP 200" in html
    # Another tenant's replies are not there, nor is the tenant column.
    assert "Globex secret reply" not in html and str(elsewhere.pk) not in html
    # Inbound messages are not deliveries.
    assert failed_then_delivered.reply_to.text not in html


def test_test_chat_replies_are_not_deliveries(
    admin_of: Callable[[Any], Client], tenant: Any, hook: Any
) -> None:
    in_app = _reply(_connector(tenant, "Playground", kind="console"), "shown in the console")
    client = admin_of(tenant)
    html = client.get(LIST).content.decode()
    assert "shown in the console" not in html and "Playground" not in html
    assert client.get(f"{LIST}{in_app.pk}/").status_code == 404


def test_list_filters_by_status_connector_and_date(
    viewer_of: Callable[[Any], Client], tenant: Any, hook: Any
) -> None:
    other_hook = _connector(tenant, "Billing")
    _reply(hook, "delivered today")
    _reply(hook, "stuck today", status="undeliverable")
    _reply(other_hook, "billing today")
    _reply(hook, "delivered last week", days_ago=7)
    client = viewer_of(tenant)

    def shown(**query: Any) -> set[str]:
        html = client.get(LIST, query).content.decode()
        texts = {"delivered today", "stuck today", "billing today", "delivered last week"}
        return {text for text in texts if text in html}

    assert shown(status="undeliverable") == {"stuck today"}
    assert shown(connector=other_hook.pk) == {"billing today"}
    today = timezone.localdate()
    assert shown(since=today.isoformat()) == {"delivered today", "stuck today", "billing today"}
    last_week = (today - timedelta(days=7)).isoformat()
    assert shown(since=last_week, until=last_week) == {"delivered last week"}
    assert shown(status="delivered", connector=hook.pk, since=today.isoformat()) == {
        "delivered today"
    }
    # A bad date is ignored, not an empty page or a crash.
    assert len(shown(since="not-a-date")) == 4


def test_another_tenants_connector_is_not_a_filter_choice(
    viewer_of: Callable[[Any], Client], tenant: Any, hook: Any, elsewhere: Any
) -> None:
    _reply(hook, "mine")
    html = viewer_of(tenant).get(LIST, {"connector": elsewhere.connector_id}).content.decode()
    assert "Globex secret reply" not in html
    assert "Globex hook" not in html


def test_detail_shows_every_attempt(
    viewer_of: Callable[[Any], Client], tenant: Any, failed_then_delivered: Any
) -> None:
    page = viewer_of(tenant).get(f"{LIST}{failed_then_delivered.pk}/")

    assert page.status_code == 200
    html = page.content.decode()
    for shown in ("503", "upstream down", "HTTP 503", "812 ms", "200", "thanks", "41 ms"):
        assert shown in html
    assert "https://hooks.example.com/cb" in html
    assert failed_then_delivered.reply_to.text in html
    # A viewer is not offered the replay button.
    assert "/replay/" not in html


def test_another_tenants_delivery_is_404(
    admin_of: Callable[[Any], Client], tenant: Any, elsewhere: Any
) -> None:
    client = admin_of(tenant)
    assert client.get(f"{LIST}{elsewhere.pk}/").status_code == 404
    assert client.post(f"{LIST}{elsewhere.pk}/replay/").status_code == 404
    elsewhere.refresh_from_db()
    assert elsewhere.status == "delivered"


def test_an_inbound_message_is_not_a_delivery(
    admin_of: Callable[[Any], Client], tenant: Any, failed_then_delivered: Any
) -> None:
    inbound = failed_then_delivered.reply_to
    assert admin_of(tenant).get(f"{LIST}{inbound.pk}/").status_code == 404


def test_viewer_cannot_replay(
    viewer_of: Callable[[Any], Client], tenant: Any, failed_then_delivered: Any
) -> None:
    response = viewer_of(tenant).post(f"{LIST}{failed_then_delivered.pk}/replay/")
    assert response.status_code == 403
    failed_then_delivered.refresh_from_db()
    assert failed_then_delivered.status == "delivered"


@pytest.fixture
def deliveries_queued(redis_client: redis.Redis) -> Iterator[Callable[[Any], list[dict[str, Any]]]]:
    """The deliver_reply tasks queued for one message. Only those are looked at and then
    removed, so tests running beside these keep their own queued work."""
    taken: list[bytes] = []

    def find(message_id: Any) -> list[dict[str, Any]]:
        found = []
        for raw in redis_client.lrange("default", 0, -1):
            headers = json.loads(raw).get("headers", {})
            if headers.get("task", "").endswith(".deliver_reply") and str(
                message_id
            ) in headers.get("argsrepr", ""):
                taken.append(raw)
                found.append(headers)
        return found

    yield find
    for raw in taken:
        redis_client.lrem("default", 0, raw)


def test_admin_replay_queues_the_delivery_again(
    admin_of: Callable[[Any], Client],
    tenant: Any,
    failed_then_delivered: Any,
    deliveries_queued: Callable[[Any], list[dict[str, Any]]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    reply = failed_then_delivered
    client = admin_of(tenant)
    assert "/replay/" in client.get(f"{LIST}{reply.pk}/").content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"{LIST}{reply.pk}/replay/", follow=True)

    assert response.status_code == 200
    assert "queued for delivery again" in response.content.decode()
    reply.refresh_from_db()
    assert reply.status == "pending" and reply.error == "" and reply.next_attempt_at is None
    queued = deliveries_queued(reply.pk)
    assert len(queued) == 1 and "'replay': True" in queued[0]["kwargsrepr"]


def test_a_reply_through_a_disabled_connector_is_not_replayed(
    admin_of: Callable[[Any], Client],
    tenant: Any,
    hook: Any,
    deliveries_queued: Callable[[Any], list[dict[str, Any]]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    reply = _reply(hook, "to nowhere", status="undeliverable")
    hook.enabled = False
    hook.save()

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_of(tenant).post(f"{LIST}{reply.pk}/replay/", follow=True)

    assert "cannot be replayed" in response.content.decode()
    reply.refresh_from_db()
    assert reply.status == "undeliverable"
    assert deliveries_queued(reply.pk) == []


def test_a_voice_reply_offers_no_replay(
    admin_of: Callable[[Any], Client], tenant: Any, django_capture_on_commit_callbacks: Any
) -> None:
    reply = _reply(_connector(tenant, "Speaker", kind="aligenie"), "It is sunny.")
    client = admin_of(tenant)
    assert "/replay/" not in client.get(f"{LIST}{reply.pk}/").content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"{LIST}{reply.pk}/replay/", follow=True)
    assert "cannot be replayed" in response.content.decode()


def test_operator_sees_every_tenants_deliveries(
    operator_client: Client, failed_then_delivered: Any, elsewhere: Any
) -> None:
    html = operator_client.get(LIST).content.decode()
    assert "Your order shipped." in html and "Globex secret reply" in html
    assert "Acme" in html and "Globex" in html  # the tenant column
    assert operator_client.get(f"{LIST}{elsewhere.pk}/").status_code == 200
