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

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.runnables import Runnable

from connectors.aligenie import voice_text
from connectors.base import InboundMessage, RateLimited
from inference import InferenceError, PoolChatModel, Priority
from switchboard.bots.models import Connector
from switchboard.conversations import delivery, prompts, selectors
from switchboard.conversations.models import Conversation, EndUser, Message
from switchboard.licensing import replies
from switchboard.metering import admission, ledger
from switchboard.observability import counters
from switchboard.pool.models import InferenceEndpoint
from switchboard.pool.runtime import worker_pool

logger = logging.getLogger(__name__)

# last_seen_at is for dashboards; refreshing it at most hourly keeps it off the hot path.
_LAST_SEEN_RESOLUTION = timedelta(hours=1)


@dataclass(frozen=True)
class ReceiveResult:
    message: Message
    created: bool


class Refused(Exception):
    """Admission refused a tenant-API message: the API answers with an HTTP error and
    stores nothing, as for any other request it turns down."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


def message_receive(
    *,
    connector: Connector,
    inbound: InboundMessage,
    generate: bool = True,
    inline: bool = False,
) -> ReceiveResult:
    """Persist an inbound message and enqueue its reply, exactly once per provider id.

    `generate=False` stores a turn that is answered otherwise (a voice turn answered with
    the reply held from the turn before). `inline=True` stores it claimed by the caller,
    which asks the pool itself while its client waits (the tenant API's synchronous
    paths): nothing is enqueued, and the sweeper only takes it over if the caller dies.
    """
    if not inline:
        # An inline caller makes a fresh id per request: nothing to find.
        existing = _inbound_by_provider_id(connector, inbound.provider_message_id)
        if existing is not None:
            return ReceiveResult(existing, created=False)
    now = timezone.now()
    try:
        with transaction.atomic():
            end_user = end_user_touch(connector=connector, inbound=inbound, now=now)
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
            decision = admission.admit(
                tenant_id=connector.tenant_id,
                end_user=end_user,
                connector_kind=connector.kind,
                model_name=connector.bot.model_name,
                now=now,
            )
            if not decision.admitted:
                return _receive_refused(connector, inbound, conversation, decision)
            answerable = bool(inbound.text.strip())
            wanted = answerable and generate
            status = Message.Status.RECEIVED if wanted else Message.Status.REPLIED
            claim: dict[str, Any] = {}
            if inline:
                status = Message.Status.PROCESSING
                claim = {"claimed_at": now, "attempts": 1}
            message = Message.objects.create(
                tenant_id=connector.tenant_id,
                conversation=conversation,
                connector=connector,
                direction=Message.Direction.INBOUND,
                text=inbound.text,
                provider_message_id=inbound.provider_message_id,
                reply_handle=inbound.reply_handle,
                status=status,
                **claim,
            )
            if inline:
                pass
            elif wanted:
                queue = _queue_for(connector)
                transaction.on_commit(lambda: _enqueue_generation(message.pk, queue))
            elif not answerable:
                # A picture, file or video: a polite, configurable answer beats silence.
                _reply_canned(inbound=message, text=connector.bot.unsupported_message_reply)
    except IntegrityError:
        # A concurrent retry of the same provider message won the insert.
        existing = _inbound_by_provider_id(connector, inbound.provider_message_id)
        if existing is None:
            raise
        return ReceiveResult(existing, created=False)
    return ReceiveResult(message, created=True)


def _receive_refused(
    connector: Connector,
    inbound: InboundMessage,
    conversation: Conversation,
    decision: admission.Decision,
) -> ReceiveResult:
    """Store a refused message and answer it with the tenant's refusal text.

    A machine sender (webhook) that is merely too fast gets 429 instead and nothing is
    stored, so its retry after `Retry-After` is a fresh message, not a duplicate.
    """
    # Observability: counted here, where every refusal passes, the ones answered with an
    # HTTP error that store nothing included.
    counters.refusal(
        tenant_id=connector.tenant_id, connector_kind=connector.kind, reason=decision.reason
    )
    if connector.kind == Connector.Kind.API:
        raise Refused(decision.reason, decision.retry_after_s)
    if decision.reason == replies.RATE_LIMITED and connector.kind == Connector.Kind.WEBHOOK:
        raise RateLimited(
            "too many messages: the tenant's or this end user's rate limit is reached",
            retry_after_s=decision.retry_after_s or 1.0,
        )
    message = Message.objects.create(
        tenant_id=connector.tenant_id,
        conversation=conversation,
        connector=connector,
        direction=Message.Direction.INBOUND,
        text=inbound.text,
        provider_message_id=inbound.provider_message_id,
        reply_handle=inbound.reply_handle,
        status=Message.Status.REFUSED,
        refusal=decision.reason,
    )
    text = replies.refusal_text(
        decision.reason, connector.bot.language, connector.tenant.refusal_replies
    )
    _reply_canned(inbound=message, text=text, finish_reason="refused")
    return ReceiveResult(message, created=True)


def _inbound_by_provider_id(connector: Connector, provider_id: str) -> Message | None:
    return Message.objects.filter(
        connector=connector, direction=Message.Direction.INBOUND, provider_message_id=provider_id
    ).first()


def end_user_touch(*, connector: Connector, inbound: InboundMessage, now: Any) -> EndUser:
    end_user, created = EndUser.objects.get_or_create(
        tenant_id=connector.tenant_id,
        channel=inbound.channel,
        external_id=inbound.user_id,
        defaults={"display_name": inbound.user_name},
    )
    if not created and end_user.last_seen_at < now - _LAST_SEEN_RESOLUTION:
        EndUser.objects.filter(pk=end_user.pk).update(last_seen_at=now)
    return end_user


def _reply_canned(*, inbound: Message, text: str, finish_reason: str = "canned") -> Message:
    reply = Message.objects.create(
        tenant_id=inbound.tenant_id,
        conversation_id=inbound.conversation_id,
        connector_id=inbound.connector_id,
        direction=Message.Direction.OUTBOUND,
        text=text,
        status=Message.Status.PENDING,
        reply_to=inbound,
        finish_reason=finish_reason,
    )
    transaction.on_commit(lambda: _after_reply(inbound, reply))
    return reply


def _after_reply(inbound: Message, reply: Message) -> None:
    kind = inbound.connector.kind
    if kind in (Connector.Kind.ALIGENIE, Connector.Kind.API):
        # An ingress may be waiting for this reply to answer synchronously (the
        # speaker; the tenant API's sync mode).
        notify_reply_ready(inbound_id=inbound.pk, reply_id=reply.pk)
    if kind != Connector.Kind.ALIGENIE:
        _enqueue_delivery(reply.pk)


def reply_ready_key(inbound_id: uuid.UUID) -> str:
    return f"switchboard:reply-ready:{inbound_id}"


def notify_reply_ready(*, inbound_id: uuid.UUID, reply_id: uuid.UUID) -> None:
    client = delivery.redis_client()
    key = reply_ready_key(inbound_id)
    client.rpush(key, str(reply_id))
    # Nobody waits longer than a voice budget; the list must not outlive its use.
    client.expire(key, 300)


def _queue_for(connector: Connector) -> str:
    return _queue_for_kind(connector.kind)


def _queue_for_kind(kind: str) -> str:
    # A speaker is waiting with an open microphone: voice gets its own, fastest queue.
    return "realtime" if kind == Connector.Kind.ALIGENIE else "chat"


def _enqueue_generation(message_id: uuid.UUID, queue: str = "chat") -> None:
    from switchboard.conversations.tasks import generate_reply

    generate_reply.apply_async((str(message_id),), queue=queue)


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
    voice = message.connector.kind == Connector.Kind.ALIGENIE
    system_prompt = bot.system_prompt
    if voice:
        system_prompt = f"{system_prompt}\n\n{bot.voice_instructions}"
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
        system_prompt=system_prompt,
        history=selectors.conversation_history(message=message, limit=bot.history_window),
        user_text=message.text,
    )
    # Only the console's test chat watches a reply being written: a channel-layer send
    # per token is not free, so other channels just get the whole reply.
    live = _LiveReply(message.pk) if message.connector.kind == Connector.Kind.CONSOLE else None
    try:
        reply = _stream_reply(prompts.REPLY_PROMPT | model, inputs, live)
    except Exception as exc:
        if live is not None:
            live.send("error", error=str(exc)[:500])
        with transaction.atomic():
            Message.objects.filter(pk=message.pk, status=Message.Status.PROCESSING).update(
                status=Message.Status.RECEIVED, error=str(exc)[:2000]
            )
            if isinstance(exc, InferenceError):
                # A failed call is still a call: the ledger shows what the GPUs were
                # asked for, whatever came of it.
                ledger.usage_record(
                    inbound=message,
                    bot=bot,
                    outcome=ledger.outcome_of(exc),
                    endpoint=exc.endpoint.name if exc.endpoint else "",
                )
        raise
    if voice:
        reply.content = voice_text(str(reply.content), max_chars=bot.voice_max_chars)
    outbound = reply_record(inbound=message, reply=reply)
    if live is not None:
        live.send(
            "done",
            reply=str(outbound.pk),
            text=outbound.text,
            prompt_tokens=outbound.prompt_tokens,
            completion_tokens=outbound.completion_tokens,
            ttft_ms=outbound.ttft_ms,
            latency_ms=outbound.latency_ms,
            endpoint=str(reply.response_metadata.get("endpoint", "")),
            finish_reason=outbound.finish_reason,
        )
    return outbound


def _stream_reply(
    chain: Runnable[dict[str, Any], Any], inputs: dict[str, Any], live: _LiveReply | None
) -> AIMessageChunk:
    """Run the pipeline streaming; the chunks add up to the whole reply, its usage and
    timings riding on the last one."""
    chunks: list[AIMessageChunk] = []
    for chunk in chain.stream(inputs):
        chunks.append(chunk)
        if live is not None and chunk.content:
            live.send("delta", text=str(chunk.content))
    # The pool ends every stream with its result or raises: never empty. Merged once at
    # the end: adding chunk by chunk costs a model copy per token.
    return chunks[0] + chunks[1:]


def live_group(message_id: uuid.UUID | str) -> str:
    """The Channels group that watches the reply to an inbound message being written."""
    return f"console.chat.{uuid.UUID(str(message_id)).hex}"


class _LiveReply:
    """Publishes a reply's progress to its inbound message's group: `chat.delta` per
    token, then `chat.done` or `chat.error`. Best effort: a broken channel layer never
    fails a generation (the reply is stored either way), it only stops the live view."""

    def __init__(self, message_id: uuid.UUID) -> None:
        self.message_id = str(message_id)
        self.group = live_group(message_id)
        self.layer = get_channel_layer()
        self.seq = 0

    def send(self, event: str, **data: Any) -> None:
        if self.layer is None:
            return
        self.seq += 1
        payload = {"type": f"chat.{event}", "message": self.message_id, "seq": self.seq, **data}
        try:
            async_to_sync(self.layer.group_send)(self.group, payload)
        except Exception:
            logger.warning("live reply %s: channel layer failed, not publishing", self.group)
            self.layer = None


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
        ledger.usage_record(
            inbound=inbound,
            bot=inbound.conversation.bot,
            outcome="ok",
            endpoint=str(meta["endpoint"]),
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            ttft_ms=meta["ttft_ms"],
            latency_ms=meta["latency_ms"],
        )
        transaction.on_commit(lambda: _after_reply(inbound, outbound))
    return outbound


def message_fail(*, message_id: str, error: str) -> None:
    Message.objects.filter(
        pk=message_id, status__in=[Message.Status.RECEIVED, Message.Status.PROCESSING]
    ).update(status=Message.Status.FAILED, error=error[:2000])


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
        ).values_list("pk", "connector__kind")[:1000]
    )
    for pk, kind in waiting:
        _enqueue_generation(pk, _queue_for_kind(kind))
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
