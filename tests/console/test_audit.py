"""Console audit log (operators): entries, filters, pagination, masked secrets."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

pytestmark = pytest.mark.django_db

AUDIT = "/console/audit/"


@pytest.fixture
def alice(make_console_user: Callable[..., Any]) -> Any:
    return make_console_user("operator")


def _as(user: Any, remote_addr: str = "192.0.2.7") -> Any:
    from auditlog.context import set_actor

    return set_actor(user, remote_addr=remote_addr)


def test_tenant_users_get_404(
    admin_of: Callable[[Any], Client], viewer_of: Callable[[Any], Client], tenant: Any
) -> None:
    assert admin_of(tenant).get(AUDIT).status_code == 404
    assert viewer_of(tenant).get(AUDIT).status_code == 404


def test_operator_sees_who_changed_what_from_where(
    operator_client: Client, alice: Any, tenant: Any
) -> None:
    from switchboard.bots.services import bot_create

    with _as(alice):
        bot = bot_create(tenant=tenant, name="Concierge")
        bot.name = "Front desk"
        bot.save()

    page = operator_client.get(AUDIT)

    assert page.status_code == 200
    html = page.content.decode()
    assert alice.username in html and "192.0.2.7" in html
    # The rename, old → new, on an update entry after the bot's create entry.
    assert '<code>name</code>: <span class="muted">Concierge</span> → Front desk' in html
    assert '<span class="badge">update</span>' in html
    assert '<span class="badge ok">create</span>' in html


def test_connector_secrets_never_show(operator_client: Client, alice: Any, tenant: Any) -> None:
    from switchboard.bots.services import bot_create, connector_create_webhook

    secret = f"whsec_{uuid.uuid4().hex}"
    with _as(alice):
        connector_create_webhook(
            bot=bot_create(tenant=tenant, name="B"),
            name="Hook",
            callback_url="https://example.com/cb",
            secret=secret,
        )
    from auditlog.models import LogEntry

    html = operator_client.get(AUDIT).content.decode()
    assert "Hook" in html
    assert secret[-8:] not in html
    # Not even stored: secrets are excluded from the log, not masked (a mask keeps half).
    assert not any(secret[-8:] in str(e.changes) for e in LogEntry.objects.all())


def test_filters_by_actor_model_action_and_date(
    operator_client: Client, make_console_user: Callable[..., Any], tenant: Any
) -> None:
    from auditlog.models import LogEntry
    from django.contrib.contenttypes.models import ContentType

    from switchboard.bots.services import bot_create
    from switchboard.pool.models import InferenceEndpoint

    alice, bob = make_console_user("operator"), make_console_user("operator")
    with _as(alice):
        bot_create(tenant=tenant, name="Alice bot")
    with _as(bob):
        endpoint = InferenceEndpoint.objects.create(name="bob-gpu", url="http://bob-gpu:8000")
        endpoint.draining = True
        endpoint.save()
    # Only these rows are looked at: creating the users themselves is audited too.
    mine = {"Alice bot", "bob-gpu"}

    def shown(**query: Any) -> list[str]:
        html = operator_client.get(AUDIT, query).content.decode()
        return sorted(name for name in mine if name in html)

    assert shown(actor=alice.username) == ["Alice bot"]
    assert shown(actor=bob.username.upper()) == ["bob-gpu"]
    endpoint_type = ContentType.objects.get_for_model(InferenceEndpoint)
    assert shown(model=endpoint_type.pk) == ["bob-gpu"]
    assert shown(action=LogEntry.Action.UPDATE, actor=bob.username) == ["bob-gpu"]
    assert shown(action=LogEntry.Action.UPDATE, actor=alice.username) == []
    today = timezone.localdate()
    assert shown(since=today.isoformat(), until=today.isoformat()) == ["Alice bot", "bob-gpu"]
    assert shown(until=(today - timedelta(days=1)).isoformat()) == []
    assert shown(since="yesterday-ish") == ["Alice bot", "bob-gpu"]  # a bad date is ignored


def test_the_model_filter_offers_the_audited_models(operator_client: Client) -> None:
    html = operator_client.get(AUDIT).content.decode()
    for name in ("Bot", "Connector", "Inference endpoint", "Tenant"):
        assert f">{name}</option>" in html


def test_the_log_is_paginated_newest_first(operator_client: Client, alice: Any) -> None:
    from switchboard.pool.models import InferenceEndpoint

    with _as(alice):
        for n in range(55):
            InferenceEndpoint.objects.create(name=f"node-{n:02d}", url=f"http://node-{n:02d}:8000")

    first = operator_client.get(AUDIT, {"actor": alice.username}).content.decode()
    assert "node-54" in first and "node-05" in first and "node-04" not in first
    assert "Page 1 of 2" in first
    assert "page=2" in first and f"actor={alice.username}" in first  # filters kept

    second = operator_client.get(AUDIT, {"actor": alice.username, "page": 2}).content.decode()
    assert "node-04" in second and "node-00" in second and "node-05" not in second
