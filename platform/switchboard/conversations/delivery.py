"""Delivering replies through each connector kind, with a log of every attempt.

- webhook: a Standard-Webhooks-signed POST to the tenant's callback URL (SSRF-guarded),
  retried on the Standard Webhooks schedule (about three days);
- dingtalk: the message's session webhook while valid, else the robot OpenAPI; paced per
  conversation, throttling answered with DingTalk's own hints, split replies resumed
  where they stopped;
- aligenie: answered synchronously by the ingress, so there is nothing to push; a reply
  that missed the speaker's deadline waits for the session's next turn.
- console: the test chat showed the reply live, so it is marked delivered in-app.

Permanent failures count against the connector; enough in a row disable it.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any

import httpx
import redis
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from connectors.base import DeliveryError
from connectors.dingtalk import DingTalkDeliveryError, DingTalkSender
from connectors.netguard import guarded_transport
from connectors.webhook import WebhookSender
from switchboard.bots.models import Connector
from switchboard.conversations.models import DeliveryAttempt, Message

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sent:
    via: str
    target: str
    http_status: int | None = None
    response_excerpt: str = ""


class Paced(Exception):
    """The conversation sent a message too recently; try again after `wait_s`."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"paced for {wait_s:.2f}s")
        self.wait_s = wait_s


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    held: bool = False  # waiting for the conversation's next turn (voice)
    nothing_to_do: bool = False


def reply_payload(reply: Message) -> dict[str, Any]:
    inbound = reply.reply_to
    assert inbound is not None
    prompt, completion = reply.prompt_tokens or 0, reply.completion_tokens or 0
    return {
        "type": "message.reply",
        "timestamp": reply.created_at.isoformat(),
        "data": {
            "message_id": inbound.provider_message_id,
            "reply_id": str(reply.pk),
            "conversation_id": inbound.reply_handle.get("conversation_id"),
            "user_id": inbound.conversation.end_user.external_id,
            "text": reply.text,
            "finish_reason": reply.finish_reason,
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
            "timings": {"ttft_ms": reply.ttft_ms, "latency_ms": reply.latency_ms},
        },
    }


def reply_deliver(*, message_id: str, replay: bool = False, final: bool = False) -> Outcome:
    """One delivery attempt of a pending reply. Raises `DeliveryError` or `Paced`.

    `final`: no retry follows a failure of this attempt, so it is logged `failed`.
    """
    reply = (
        Message.objects.select_related(
            "connector", "conversation__bot", "reply_to__conversation__end_user"
        )
        .filter(pk=message_id, direction=Message.Direction.OUTBOUND, status=Message.Status.PENDING)
        .first()
    )
    if reply is None:
        return Outcome(delivered=False, nothing_to_do=True)
    connector = reply.connector
    if connector.kind == Connector.Kind.ALIGENIE:
        return Outcome(delivered=False, held=True)
    if connector.kind == Connector.Kind.CONSOLE:
        # Delivered in-app: the console's test chat showed the reply as it was written.
        Message.objects.filter(pk=reply.pk).update(
            status=Message.Status.DELIVERED, delivered_at=timezone.now(), next_attempt_at=None
        )
        return Outcome(delivered=True)
    if connector.kind == Connector.Kind.API and not reply.reply_to.reply_handle.get("callback_url"):
        # Nowhere to send it: the caller reads it from the API (or already had it).
        Message.objects.filter(pk=reply.pk).update(
            status=Message.Status.DELIVERED, delivered_at=timezone.now(), next_attempt_at=None
        )
        return Outcome(delivered=True)
    if not connector.enabled:
        # Disabled by an operator or by repeated permanent failures: send nothing more.
        Message.objects.filter(pk=reply.pk).update(
            status=Message.Status.UNDELIVERABLE, error="connector is disabled", next_attempt_at=None
        )
        return Outcome(delivered=False, nothing_to_do=True)
    attempt = reply.attempts + 1
    Message.objects.filter(pk=reply.pk).update(attempts=attempt)
    started = time.perf_counter()
    try:
        if connector.kind == Connector.Kind.DINGTALK:
            sent = _send_dingtalk(reply, connector)
        else:
            sent = _send_webhook(reply, connector)
    except Paced:
        Message.objects.filter(pk=reply.pk).update(attempts=attempt - 1)
        raise
    except DeliveryError as exc:
        _record_failure(reply, connector, exc, attempt, started, replay, final)
        raise
    _record_success(reply, connector, sent, attempt, started, replay)
    return Outcome(delivered=True)


def _send_webhook(reply: Message, connector: Connector) -> Sent:
    url = connector.callback_url
    if connector.kind == Connector.Kind.API:
        # The tenant API names the callback per message.
        url = reply.reply_to.reply_handle.get("callback_url", "")
    if not url:
        raise DeliveryError("connector has no callback URL", permanent=True)
    allow_private = connector.allow_private_callback or settings.SWITCHBOARD_ALLOW_PRIVATE_CALLBACKS
    # The guard checks the address each connection dials, not just the URL at save time,
    # so DNS rebinding cannot smuggle a callback into the private network.
    with httpx.Client(transport=guarded_transport(allow_private)) as client:
        result = WebhookSender(client).send(
            url=url,
            secret=connector.secret,
            event_id=f"msg_{reply.pk.hex}",
            payload=reply_payload(reply),
            timeout=settings.SWITCHBOARD_CALLBACK_TIMEOUT_S,
        )
    return Sent("callback", url, result.status_code, result.response_excerpt)


@cache
def _dingtalk_sender() -> DingTalkSender:
    # One per process: its access-token cache must outlive a single delivery.
    prefixes = tuple(settings.SWITCHBOARD_DINGTALK_SESSION_WEBHOOK_PREFIXES) or None
    return DingTalkSender(
        httpx.Client(timeout=settings.SWITCHBOARD_CALLBACK_TIMEOUT_S),
        api_base=settings.SWITCHBOARD_DINGTALK_API_BASE,
        webhook_prefixes=prefixes,
    )


@cache
def redis_client() -> redis.Redis:
    # Transport only (pacing, reply notifications): nothing here must survive Redis.
    return redis.Redis.from_url(settings.REDIS_URL)


def _pace(conversation_id: int) -> None:
    """At most one DingTalk message per conversation per pace interval."""
    interval_ms = settings.SWITCHBOARD_DINGTALK_PACE_MS
    if interval_ms <= 0:
        return
    key = f"switchboard:pace:dingtalk:{conversation_id}"
    if not redis_client().set(key, 1, nx=True, px=interval_ms):
        wait_ms = redis_client().pttl(key)
        raise Paced(max(wait_ms, 50) / 1000.0)


def _send_dingtalk(reply: Message, connector: Connector) -> Sent:
    inbound = reply.reply_to
    assert inbound is not None
    _pace(reply.conversation_id)
    resume_at = int(reply.reply_handle.get("delivered_chars", 0))
    try:
        result = _dingtalk_sender().send(
            handle=inbound.reply_handle,
            text=reply.text[resume_at:],
            fmt=reply.conversation.bot.reply_format,
            app_key=connector.app_key,
            app_secret=connector.secret,
            robot_code=connector.robot_code,
            title=reply.conversation.bot.name,
        )
    except DingTalkDeliveryError as exc:
        if exc.delivered_chars:
            # Parts already shown to the user must not be sent again on retry.
            handle = {**reply.reply_handle, "delivered_chars": resume_at + exc.delivered_chars}
            Message.objects.filter(pk=reply.pk).update(reply_handle=handle)
        raise
    return Sent(result.via, "", None, f"{result.parts} part(s)")


def _log(
    reply: Message,
    connector: Connector,
    *,
    attempt: int,
    outcome: str,
    started: float,
    replay: bool,
    via: str,
    target: str = "",
    http_status: int | None = None,
    excerpt: str = "",
    error: str = "",
) -> None:
    DeliveryAttempt.objects.create(
        tenant_id=reply.tenant_id,
        message=reply,
        connector=connector,
        attempt=attempt,
        outcome=outcome,
        via=via,
        target=target[:1000],
        http_status=http_status,
        latency_ms=(time.perf_counter() - started) * 1000.0,
        response_excerpt=excerpt[:500],
        error=error[:2000],
        replay=replay,
    )


def _record_success(
    reply: Message, connector: Connector, sent: Sent, attempt: int, started: float, replay: bool
) -> None:
    with transaction.atomic():
        _log(
            reply,
            connector,
            attempt=attempt,
            outcome=DeliveryAttempt.Outcome.DELIVERED,
            started=started,
            replay=replay,
            via=sent.via,
            target=sent.target,
            http_status=sent.http_status,
            excerpt=sent.response_excerpt,
        )
        Message.objects.filter(pk=reply.pk).update(
            status=Message.Status.DELIVERED,
            delivered_at=timezone.now(),
            next_attempt_at=None,
            error="",
        )
        if connector.consecutive_permanent_failures:
            Connector.objects.filter(pk=connector.pk).update(consecutive_permanent_failures=0)


def _record_failure(
    reply: Message,
    connector: Connector,
    exc: DeliveryError,
    attempt: int,
    started: float,
    replay: bool,
    final: bool = False,
) -> None:
    failed = exc.permanent or final
    outcome = DeliveryAttempt.Outcome.FAILED if failed else DeliveryAttempt.Outcome.RETRYING
    via = "callback" if connector.kind == Connector.Kind.WEBHOOK else connector.kind
    # A DingTalk failure says which route failed (session webhook or OpenAPI).
    via = getattr(exc, "via", "") or via
    with transaction.atomic():
        _log(
            reply,
            connector,
            attempt=attempt,
            outcome=outcome,
            started=started,
            replay=replay,
            via=via,
            target=connector.callback_url if via == "callback" else "",
            http_status=exc.status_code,
            excerpt=exc.response_excerpt,
            error=exc.message,
        )
        Message.objects.filter(pk=reply.pk).update(error=exc.message[:2000])


def reply_note_retry(*, message_id: str, error: DeliveryError, countdown: float) -> None:
    Message.objects.filter(pk=message_id).update(
        error=error.message[:2000],
        next_attempt_at=timezone.now() + timedelta(seconds=countdown),
    )


def reply_mark_undeliverable(*, message_id: str, error: DeliveryError) -> None:
    """Give up on a reply; permanent failures count towards disabling the connector."""
    reply = Message.objects.select_related("connector").filter(pk=message_id).first()
    if reply is None:
        return
    now = timezone.now()
    with transaction.atomic():
        Message.objects.filter(pk=reply.pk).update(
            status=Message.Status.UNDELIVERABLE, error=error.message[:2000], next_attempt_at=None
        )
        updates: dict[str, Any] = {
            "last_error": f"delivery failed: {error.message}"[:2000],
            "last_error_at": now,
        }
        if error.permanent:
            updates["consecutive_permanent_failures"] = F("consecutive_permanent_failures") + 1
        Connector.objects.filter(pk=reply.connector_id).update(**updates)
        threshold = settings.SWITCHBOARD_CONNECTOR_DISABLE_AFTER
        disabled = Connector.objects.filter(
            pk=reply.connector_id, enabled=True, consecutive_permanent_failures__gte=threshold
        ).update(
            enabled=False,
            last_error=(
                f"disabled after {threshold} permanent delivery failures in a row; "
                f"last: {error.message}"
            )[:2000],
        )
    if disabled:
        logger.error("connector %s disabled after repeated permanent failures", reply.connector_id)


def reply_replay(*, message_id: uuid.UUID | str) -> bool:
    """Send an outbound message again (admin action), whatever became of it before."""
    updated = (
        Message.objects.filter(
            pk=message_id,
            direction=Message.Direction.OUTBOUND,
            status__in=[
                Message.Status.DELIVERED,
                Message.Status.UNDELIVERABLE,
                Message.Status.PENDING,
            ],
        )
        .exclude(connector__kind=Connector.Kind.ALIGENIE)
        .filter(connector__enabled=True)
        .update(status=Message.Status.PENDING, next_attempt_at=None, error="")
    )
    if not updated:
        return False
    from switchboard.conversations.tasks import deliver_reply

    transaction.on_commit(lambda: deliver_reply.delay(str(message_id), replay=True))
    return True
