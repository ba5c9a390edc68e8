"""MAU alerts: 80, 90 and 100 % of a tenant's licence and of each model licence.

Raised where the counters move (admission), exactly once per scope, month and threshold
(a unique constraint decides, so racing workers cannot raise one twice), stored for the
console, and sent as a Standard-Webhooks-signed JSON POST to the tenant's alert webhook
(tenant thresholds) or the operator's (model thresholds). Delivery runs after commit and
is retried by beat until it succeeds.
"""

from __future__ import annotations

import logging
import math
import threading
from datetime import date
from typing import Any

import httpx
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from connectors.base import DeliveryError
from connectors.netguard import guarded_transport
from connectors.webhook.outbound import WebhookSender
from switchboard.metering.models import Alert

logger = logging.getLogger(__name__)

THRESHOLDS = (80, 90, 100)
# Give up retrying a delivery after this many attempts; the alert stays in the console.
MAX_ATTEMPTS = 20

# (scope, month, percent) raised already, as seen by this process: saves the insert
# attempt for every new user past a threshold.
_raised: set[tuple[str, date, int]] = set()
_raised_lock = threading.Lock()


def crossed(active: int, limit: int) -> list[int]:
    """Thresholds at or below `active` for `limit` (the count that reaches 80 % of 10 is 8)."""
    if limit <= 0:
        return []
    return [p for p in THRESHOLDS if active >= math.ceil(limit * p / 100)]


def tenant_mau_crossed(*, tenant_id: Any, month: date, active: int, limit: int) -> None:
    for percent in crossed(active, limit):
        _raise(
            scope=f"tenant:{tenant_id}",
            subject=Alert.Subject.TENANT_MAU,
            tenant_id=tenant_id,
            model_name="",
            month=month,
            percent=percent,
            active=active,
            limit=limit,
            message=f"Monthly active users reached {percent} % of the licence: {active} of "
            f"{limit} in {month:%Y-%m}.",
        )


def model_mau_crossed(*, model_name: str, month: date, active: int) -> None:
    from switchboard.licensing.models import ModelLicence

    threshold = _model_threshold(model_name)
    if not threshold:
        return
    for percent in crossed(active, threshold):
        licence = ModelLicence.objects.filter(model_name=model_name).first()
        name = licence.licence_name if licence else "its licence"
        _raise(
            scope=f"model:{model_name}",
            subject=Alert.Subject.MODEL_MAU,
            tenant_id=None,
            model_name=model_name,
            month=month,
            percent=percent,
            active=active,
            limit=threshold,
            message=f"{model_name}: this installation's monthly active users reached "
            f"{percent} % of the threshold of {name} ({active} of {threshold} in "
            f"{month:%Y-%m}); above it the model needs a commercial licence.",
        )


_thresholds: dict[str, tuple[float, int | None]] = {}


def _model_threshold(model_name: str) -> int | None:
    # Looked up for every new user of the month: cached briefly like licences are.
    from switchboard.licensing.models import ModelLicence

    now = timezone.now().timestamp()
    cached = _thresholds.get(model_name)
    if cached and now - cached[0] < settings.SWITCHBOARD_LIMITS_CACHE_S:
        return cached[1]
    threshold = (
        ModelLicence.objects.filter(model_name=model_name)
        .values_list("mau_threshold", flat=True)
        .first()
    )
    _thresholds[model_name] = (now, threshold)
    return threshold


def cache_clear() -> None:
    with _raised_lock:
        _raised.clear()
    _thresholds.clear()


def _raise(
    *,
    scope: str,
    subject: str,
    tenant_id: Any,
    model_name: str,
    month: date,
    percent: int,
    active: int,
    limit: int,
    message: str,
) -> None:
    key = (scope, month, percent)
    with _raised_lock:
        if key in _raised:
            return
    url = _webhook_url(tenant_id)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO metering_alert (scope, subject, tenant_id, model_name, month,"
            ' threshold_percent, value, "limit", message, created_at, webhook_url,'
            " delivery_attempts, delivery_error)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 0, '')"
            " ON CONFLICT (scope, month, threshold_percent) DO NOTHING RETURNING id",
            [
                scope,
                subject,
                tenant_id,
                model_name,
                month,
                percent,
                active,
                limit,
                message,
                timezone.now(),
                url,
            ],
        )
        row = cursor.fetchone()
    if row is not None:
        alert_id = int(row[0])
        logger.warning("alert raised: %s", message)
        if url:
            transaction.on_commit(lambda: _enqueue(alert_id))

    def remember() -> None:
        with _raised_lock:
            _raised.add(key)

    # Only once it is durable: a rolled-back first message must not hide the alert.
    transaction.on_commit(remember)


def _webhook_url(tenant_id: Any) -> str:
    if tenant_id is None:
        return settings.SWITCHBOARD_OPERATOR_ALERT_WEBHOOK_URL or ""
    from switchboard.tenants.models import Tenant

    return (
        Tenant.objects.filter(pk=tenant_id).values_list("alert_webhook_url", flat=True).first()
        or ""
    )


def _enqueue(alert_id: int) -> None:
    from switchboard.metering.tasks import alert_deliver

    alert_deliver.apply_async((alert_id,), queue="default")


def alert_payload(alert: Alert) -> dict[str, Any]:
    return {
        "type": "alert.mau_threshold",
        "id": alert.pk,
        "subject": alert.subject,
        "tenant": str(alert.tenant_id) if alert.tenant_id else None,
        "model": alert.model_name or None,
        "month": f"{alert.month:%Y-%m}",
        "threshold_percent": alert.threshold_percent,
        "value": alert.value,
        "limit": alert.limit,
        "message": alert.message,
        "created_at": alert.created_at.isoformat(),
    }


def alert_deliver(*, alert_id: int) -> bool:
    """Send one alert to its webhook; True when delivered (now or before)."""
    with transaction.atomic():
        alert = (
            Alert.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("tenant")
            .filter(pk=alert_id, delivered_at__isnull=True)
            .first()
        )
        if alert is None or not alert.webhook_url:
            return alert is None
        if alert.tenant_id:
            secret = alert.tenant.alert_webhook_secret
        else:
            secret = settings.SWITCHBOARD_OPERATOR_ALERT_WEBHOOK_SECRET or ""
        alert.delivery_attempts += 1
        try:
            if not secret:
                raise DeliveryError("no alert webhook secret is set", permanent=True)
            allow_private = settings.SWITCHBOARD_ALLOW_PRIVATE_CALLBACKS
            with httpx.Client(transport=guarded_transport(allow_private)) as client:
                WebhookSender(client).send(
                    url=alert.webhook_url,
                    secret=secret,
                    event_id=f"alert_{alert.pk}",
                    payload=alert_payload(alert),
                    timeout=settings.SWITCHBOARD_CALLBACK_TIMEOUT_S,
                )
        except DeliveryError as exc:
            alert.delivery_error = str(exc)[:2000]
            alert.save(update_fields=["delivery_attempts", "delivery_error"])
            logger.warning("alert %s not delivered: %s", alert.pk, exc)
            return False
        alert.delivered_at = timezone.now()
        alert.delivery_error = ""
        alert.save(update_fields=["delivery_attempts", "delivery_error", "delivered_at"])
        return True


def alerts_deliver_pending() -> int:
    """Retry every undelivered alert that has a webhook (beat). Returns how many sent."""
    pending = Alert.objects.filter(
        delivered_at__isnull=True, delivery_attempts__lt=MAX_ATTEMPTS
    ).exclude(webhook_url="")
    sent = 0
    for alert_id in pending.values_list("pk", flat=True)[:500]:
        sent += alert_deliver(alert_id=alert_id)
    return sent
