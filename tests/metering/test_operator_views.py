"""What the operator sees: model licence MAU in the admin, dashboard actives, MAU rebuild."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from connectors.base import InboundMessage

pytestmark = pytest.mark.django_db


def test_model_licence_admin_shows_installation_mau_against_the_threshold(
    admin_client: Any,
) -> None:
    from switchboard.metering.models import ModelMauCounter
    from switchboard.metering.selectors import month_start

    ModelMauCounter.objects.create(
        model_name="Qwen/Qwen-7B-Chat", month=month_start(), active=81_000_000
    )
    ModelMauCounter.objects.create(
        model_name="meta-llama/Llama-2-7b-chat-hf",
        month=month_start(datetime(2020, 1, 5, tzinfo=UTC)),
        active=5,
    )
    page = admin_client.get("/admin/licensing/modellicence/").content.decode()
    assert "81,000,000 (81.00 % of threshold)" in page
    assert "100000000" in page or "100,000,000" in page
    # Last month's figure for Llama is not this month's.
    assert "5 (" not in page


def test_dashboard_actives_selector(tenant: Any, connector: Any) -> None:
    from switchboard.conversations.services import message_receive
    from switchboard.metering.selectors import actives

    for user in ("a", "b", "c", "a"):
        message_receive(
            connector=connector,
            inbound=InboundMessage(
                channel="webhook",
                provider_message_id=uuid.uuid4().hex,
                user_id=user,
                conversation_key=user,
                text="hi",
            ),
        )
    figures = actives(tenant)
    assert (figures.daily, figures.rolling_30_days) == (3, 3)


def test_rebuild_mau_command_restores_counters(tenant: Any, connector: Any) -> None:
    from switchboard.conversations.services import message_receive
    from switchboard.metering.models import MauCounter

    for user in ("a", "b"):
        message_receive(
            connector=connector,
            inbound=InboundMessage(
                channel="webhook",
                provider_message_id=uuid.uuid4().hex,
                user_id=user,
                conversation_key=user,
                text="hi",
            ),
        )
    MauCounter.objects.filter(tenant=tenant).update(active=0)
    out = StringIO()
    call_command("rebuild_mau", "--tenant", tenant.slug, stdout=out)
    assert "rebuilt 1 MAU counter" in out.getvalue()
    assert MauCounter.objects.get(tenant=tenant).active == 2


def test_tenant_admin_never_shows_the_alert_secret_and_generates_one(
    admin_client: Any, tenant: Any
) -> None:
    from switchboard.tenants.models import Tenant

    url = f"/admin/tenants/tenant/{tenant.pk}/change/"
    form = {
        "name": tenant.name,
        "slug": tenant.slug,
        "is_active": "on",
        "alert_webhook_url": "https://alerts.example.com/hook",
        "refusal_replies": '{"mau_limit": {"en": "Full."}}',
        "new_alert_webhook_secret": "",
    }
    response = admin_client.post(url, form, follow=True)
    assert response.status_code == 200
    tenant = Tenant.objects.get(pk=tenant.pk)
    secret = tenant.alert_webhook_secret
    assert secret.startswith("whsec_")
    assert secret in response.content.decode()  # shown once, in the message
    assert tenant.refusal_replies == {"mau_limit": {"en": "Full."}}
    assert secret not in admin_client.get(url).content.decode()
