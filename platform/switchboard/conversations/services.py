"""Every state change of a message, from admission to delivery.

Views and tasks call these; side effects (enqueueing) run on commit, so a task never
sees a row that is not durable yet.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from langchain_core.messages import AIMessage

from connectors.base import DeliveryError, InboundMessage
from connectors.webhook import WebhookSender
from inference import PoolChatModel, Priority
from switchboard.bots.models import Connector
from switchboard.conversations import prompts, selectors
from switchboard.conversations.models import Conversation, EndUser, Message
from switchboard.pool.models import InferenceEndpoint
from switchboard.pool.runtime import worker_pool

logger = logging.getLogger(__name__)

# last_seen_at is for dashboards; refreshing it at most hourly keeps it off the hot path.
_LAST_SEEN_RESOLUTION = timedelta(hours=1)


@dataclass(frozen=True)
class ReceiveResult:
    message: Message
    created: bool


def message_receive(*, connector: Connector, inbound: InboundMessage) -> ReceiveResult:
    """Persist an inbound message and enqueue its reply, exactly once per provider id."""
    existing = _inbound_by_provider_id(connector, inbound.provider_message_id)
    if existing is not None:
        return ReceiveResult(existing, created=False)
    now = timezone.now()
    try:
        with transaction.atomic():
            end_user = _end_user_touch(connector=connector, inbound=inbound, now=now)
            conversation, created = Conversation.objects.get_or_create(
                connector=connector,
                external_key=inbound.conversation_key,
                defaults={
                    "tenant_id": connector.tenant_id,
                    "bot_id": connector.bot_id,
                    "end_user": end_user,
                },
            )
            if not created:
                Conversation.objects.filter(pk=conversation.pk).update(last_message_at=now)
            message = Message.objects.create(
                tenant_id=connector.tenant_id,
                conversation=conversation,
                connector=connector,
                direction=Message.Direction.INBOUND,
                text=inbound.text,
                provider_message_id=inbound.provider_message_id,
                reply_handle=inbound.reply_handle,
                status=Message.Status.RECEIVED,
            )
            transaction.on_commit(lambda: _enqueue_generation(message.pk))
    except IntegrityError:
        # A concurrent retry of the same provider message won the insert.
        existing = _inbound_by_provider_id(connector, inbound.provider_message_id)
        if existing is None:
            raise
        return ReceiveResult(existing, created=False)
    return ReceiveResult(message, created=True)


def _inbound_by_provider_id(connector: Connector, provider_id: str) -> Message | None:
    return Message.objects.filter(
        connector=connector, direction=Message.Direction.INBOUND, provider_message_id=provider_id
    ).first()


def _end_user_touch(*, connector: Connector, inbound: InboundMessage, now: Any) -> EndUser:
    end_user, created = EndUser.objects.get_or_create(
        tenant_id=connector.tenant_id,
        channel=inbound.channel,
        external_id=inbound.user_id,
        defaults={"display_name": inbound.user_name},
    )
    if not created and end_user.last_seen_at < now - _LAST_SEEN_RESOLUTION:
        EndUser.objects.filter(pk=end_user.pk).update(last_seen_at=now)
    return end_user


def _enqueue_generation(message_id: uuid.UUID) -> None:
    from switchboard.conversations.tasks import generate_reply

    generate_reply.delay(str(message_id))


def _enqueue_delivery(message_id: uuid.UUID, countdown: float = 0) -> None:
    from switchboard.conversations.tasks import deliver_reply

    deliver_reply.apply_async((str(message_id),), countdown=countdown)


# --- generation -------------------------------------------------------------------------


def message_claim(*, message_id: str) -> Message | None:
    """Take an inbound message for generation, or None if it is taken or already done."""
    with transaction.atomic():
        message = (
            Message.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("conversation__bot", "connector")
            .filter(
                pk=message_id, direction=Message.Direction.INBOUND, status=Message.Status.RECEIVED
            )
            .first()
        )
        if message is None:
            return None
        message.status = Message.Status.PROCESSING
        message.claimed_at = timezone.now()
        message.attempts += 1
        message.save(update_fields=["status", "claimed_at", "attempts"])
    return message


def _priority(connector: Connector) -> Priority:
    # A smart speaker holds its microphone open for the answer; everything else can wait
    # a little longer.
    return Priority.REALTIME if connector.kind == Connector.Kind.ALIGENIE else Priority.CHAT


def message_generate_reply(*, message_id: str) -> Message | None:
    """Generate and store the reply to an inbound message; None if nothing was to do.

    Raises the pool's InferenceError after putting the message back to `received`, so
    the caller decides between retrying and `message_fail`.
    """
    message = message_claim(message_id=message_id)
    if message is None:
        return None
    bot = message.conversation.bot
    model = PoolChatModel(
        pool=worker_pool(),
        model=bot.model_name,
        max_tokens=bot.max_tokens,
        temperature=bot.temperature,
        affinity_key=str(message.conversation_id),
        tenant=str(message.tenant_id),
        priority=_priority(message.connector),
        strategy=bot.routing_strategy,
        deadline_s=settings.SWITCHBOARD_INFERENCE_TOTAL_S,
    )
    inputs = prompts.prompt_inputs(
        system_prompt=bot.system_prompt,
        history=selectors.conversation_history(message=message, limit=bot.history_window),
        user_text=message.text,
    )
    try:
        reply = (prompts.REPLY_PROMPT | model).invoke(inputs)
    except Exception as exc:
        Message.objects.filter(pk=message.pk, status=Message.Status.PROCESSING).update(
            status=Message.Status.RECEIVED, error=str(exc)[:2000]
        )
        raise
    return reply_record(inbound=message, reply=reply)


def reply_record(*, inbound: Message, reply: AIMessage) -> Message:
    meta = reply.response_metadata
    usage = meta["token_usage"]
    endpoint = InferenceEndpoint.objects.filter(name=meta["endpoint"]).first()
    timings = {
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "ttft_ms": meta["ttft_ms"],
        "latency_ms": meta["latency_ms"],
        "endpoint": endpoint,
    }
    with transaction.atomic():
        outbound = Message.objects.create(
            tenant_id=inbound.tenant_id,
            conversation_id=inbound.conversation_id,
            connector_id=inbound.connector_id,
            direction=Message.Direction.OUTBOUND,
            text=str(reply.content),
            status=Message.Status.PENDING,
            reply_to=inbound,
            finish_reason=meta["finish_reason"],
            **timings,
        )
        Message.objects.filter(pk=inbound.pk).update(
            status=Message.Status.REPLIED, error="", **timings
        )
        transaction.on_commit(lambda: _enqueue_delivery(outbound.pk))
    return outbound


def message_fail(*, message_id: str, error: str) -> None:
    Message.objects.filter(
        pk=message_id, status__in=[Message.Status.RECEIVED, Message.Status.PROCESSING]
    ).update(status=Message.Status.FAILED, error=error[:2000])


# --- delivery ---------------------------------------------------------------------------


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


def reply_deliver(*, message_id: str, client: httpx.Client | None = None) -> bool:
    """POST the signed reply to the connector's callback URL; False if nothing to do.

    The webhook-id is derived from the reply, so every retry carries the same id and the
    receiver can de-duplicate.
    """
    reply = (
        Message.objects.select_related("connector", "reply_to__conversation__end_user")
        .filter(pk=message_id, direction=Message.Direction.OUTBOUND, status=Message.Status.PENDING)
        .first()
    )
    if reply is None:
        return False
    connector = reply.connector
    if not connector.callback_url:
        Message.objects.filter(pk=reply.pk).update(
            status=Message.Status.UNDELIVERABLE, error="connector has no callback URL"
        )
        return False
    Message.objects.filter(pk=reply.pk).update(attempts=reply.attempts + 1)
    owned = client is None
    http = client or httpx.Client()
    try:
        WebhookSender(http).send(
            url=connector.callback_url,
            secret=connector.secret,
            event_id=f"msg_{reply.pk.hex}",
            payload=reply_payload(reply),
            timeout=settings.SWITCHBOARD_CALLBACK_TIMEOUT_S,
        )
    finally:
        if owned:
            http.close()
    Message.objects.filter(pk=reply.pk).update(
        status=Message.Status.DELIVERED,
        delivered_at=timezone.now(),
        next_attempt_at=None,
        error="",
    )
    return True


def reply_note_retry(*, message_id: str, error: DeliveryError, countdown: float) -> None:
    Message.objects.filter(pk=message_id).update(
        error=error.message[:2000],
        next_attempt_at=timezone.now() + timedelta(seconds=countdown),
    )


def reply_mark_undeliverable(*, message_id: str, error: DeliveryError) -> None:
    reply = Message.objects.select_related("connector").filter(pk=message_id).first()
    if reply is None:
        return
    now = timezone.now()
    with transaction.atomic():
        Message.objects.filter(pk=reply.pk).update(
            status=Message.Status.UNDELIVERABLE, error=error.message[:2000], next_attempt_at=None
        )
        Connector.objects.filter(pk=reply.connector_id).update(
            last_error=f"callback delivery failed: {error.message}"[:2000], last_error_at=now
        )


# --- sweeper ----------------------------------------------------------------------------


def messages_requeue_stalled() -> dict[str, int]:
    """Re-enqueue work whose queue entry may have been lost (Redis keeps nothing on disk).

    Safe to run any time: generation claims a message with a row lock and a status
    check, and delivery only sends a reply still `pending`.
    """
    now = timezone.now()
    stalled_after = timedelta(seconds=settings.SWITCHBOARD_STALLED_AFTER_S)
    # A claim older than a whole inference deadline belongs to a worker that died.
    dead_claim = now - stalled_after - timedelta(seconds=settings.SWITCHBOARD_INFERENCE_TOTAL_S)
    released = Message.objects.filter(
        status=Message.Status.PROCESSING, claimed_at__lt=dead_claim
    ).update(status=Message.Status.RECEIVED)
    waiting = list(
        Message.objects.filter(
            status=Message.Status.RECEIVED, created_at__lt=now - stalled_after
        ).values_list("pk", flat=True)[:1000]
    )
    for pk in waiting:
        _enqueue_generation(pk)
    deliveries = list(
        Message.objects.filter(status=Message.Status.PENDING, created_at__lt=now - stalled_after)
        .exclude(next_attempt_at__gt=now - stalled_after)
        .values_list("pk", flat=True)[:1000]
    )
    for pk in deliveries:
        _enqueue_delivery(pk)
    if released or waiting or deliveries:
        logger.warning(
            "requeued stalled work: %d released claims, %d generations, %d deliveries",
            released,
            len(waiting),
            len(deliveries),
        )
    return {"released": released, "generations": len(waiting), "deliveries": len(deliveries)}
