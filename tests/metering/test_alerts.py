"""Alert delivery: signed, retried until it succeeds, never sent twice."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from django.test import override_settings
from standardwebhooks.webhooks import Webhook

from connectors.webhook import generate_secret
from tests.support.receiver import CallbackReceiver

pytestmark = [pytest.mark.django_db]


def _alert(tenant: Any, url: str, percent: int = 80) -> Any:
    from switchboard.metering.models import Alert

    return Alert.objects.create(
        scope=f"tenant:{tenant.pk}",
        subject=Alert.Subject.TENANT_MAU,
        tenant=tenant,
        month=date(2026, 11, 1),
        threshold_percent=percent,
        value=8,
        limit=10,
        message="Monthly active users reached 80 %",
        webhook_url=url,
    )


@override_settings(SWITCHBOARD_ALLOW_PRIVATE_CALLBACKS=True)
def test_a_failed_delivery_is_retried_by_beat_and_sent_once(
    tenant: Any, receiver: CallbackReceiver
) -> None:
    from switchboard.metering.alerts import alert_deliver, alerts_deliver_pending

    secret = generate_secret()
    tenant.alert_webhook_secret = secret
    tenant.save()
    alert = _alert(tenant, receiver.url)
    receiver.fail_next = 1
    assert alert_deliver(alert_id=alert.pk) is False
    alert.refresh_from_db()
    assert (alert.delivery_attempts, alert.delivered_at) == (1, None)
    assert "503" in alert.delivery_error
    assert alerts_deliver_pending() == 1
    assert alerts_deliver_pending() == 0
    alert.refresh_from_db()
    assert alert.delivered_at is not None and alert.delivery_attempts == 2
    [sent] = receiver.accepted()
    event = Webhook(secret).verify(sent.body, sent.headers)
    assert (event["id"], event["threshold_percent"]) == (alert.pk, 80)


@override_settings(SWITCHBOARD_ALLOW_PRIVATE_CALLBACKS=True)
def test_without_a_secret_nothing_is_sent_and_the_reason_is_recorded(
    tenant: Any, receiver: CallbackReceiver
) -> None:
    from switchboard.metering.alerts import alert_deliver

    alert = _alert(tenant, receiver.url)
    assert alert_deliver(alert_id=alert.pk) is False
    alert.refresh_from_db()
    assert "secret" in alert.delivery_error
    assert receiver.requests == []


def test_alert_webhooks_to_private_addresses_are_refused_by_default(
    tenant: Any, receiver: CallbackReceiver
) -> None:
    from switchboard.metering.alerts import alert_deliver

    tenant.alert_webhook_secret = generate_secret()
    tenant.save()
    alert = _alert(tenant, receiver.url)
    assert alert_deliver(alert_id=alert.pk) is False
    alert.refresh_from_db()
    assert "refused" in alert.delivery_error
    assert receiver.requests == []


def test_thresholds_crossed() -> None:
    from switchboard.metering.alerts import crossed

    assert crossed(7, 10) == []
    assert crossed(8, 10) == [80]
    assert crossed(10, 10) == [80, 90, 100]
    assert crossed(1, 1) == [80, 90, 100]
    assert crossed(80_000_000, 100_000_000) == [80]
    assert crossed(5, 0) == []
