"""Voice turns (Tmall Genie): the speaker waits on the HTTP request for its answer.

The reply is generated on the `realtime` queue while the ingress waits, up to the
connector's budget, for the worker's "reply ready" signal (a Redis list, so a signal sent
before the wait began is not lost). If the model is not done in time the speaker hears
"still thinking, ask me again" (`ASK_INF` keeps the microphone open), and the answer is
held for the next turn of the same session.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from connectors import aligenie
from connectors.base import InboundMessage
from switchboard.bots.models import Connector
from switchboard.conversations import delivery, services
from switchboard.conversations.models import DeliveryAttempt, Message

# A held answer older than this is stale: AliGenie ends a skill session after 5 minutes.
_HELD_FOR = timedelta(minutes=5)


def voice_turn(
    *, connector: Connector, inbound: InboundMessage, intent_id: int | None, deadline: float
) -> dict[str, Any]:
    """Answer one AliGenie request with the protocol's ResultModel JSON."""
    bot = connector.bot
    waiting_on = _unanswered_turn(connector, inbound.conversation_key)
    held = _held_reply(connector, inbound.conversation_key)
    if held is not None or waiting_on is not None:
        # This turn is the "ask me again": it is answered by the earlier turn's reply.
        received = services.message_receive(connector=connector, inbound=inbound, generate=False)
        if held is not None:
            return _speak(held, received.message)
    else:
        received = services.message_receive(connector=connector, inbound=inbound)
        waiting_on = received.message
        existing = _answer_of(waiting_on) if not received.created else None
        if existing is not None:
            # AliGenie retried a request we already answered: say the same again.
            return _speak(existing, received.message)
    reply = _wait_for_reply(waiting_on, deadline)
    if reply is None:
        return aligenie.ask(bot.voice_pending_reply, intent_id=intent_id)
    return _speak(reply, received.message)


def _unanswered_turn(connector: Connector, conversation_key: str) -> Message | None:
    return (
        Message.objects.filter(
            connector=connector,
            conversation__external_key=conversation_key,
            direction=Message.Direction.INBOUND,
            status__in=[Message.Status.RECEIVED, Message.Status.PROCESSING],
            created_at__gte=timezone.now() - _HELD_FOR,
        )
        .order_by("-created_at")
        .first()
    )


def _held_reply(connector: Connector, conversation_key: str) -> Message | None:
    return (
        Message.objects.filter(
            connector=connector,
            conversation__external_key=conversation_key,
            direction=Message.Direction.OUTBOUND,
            status=Message.Status.PENDING,
            created_at__gte=timezone.now() - _HELD_FOR,
        )
        .order_by("created_at")
        .first()
    )


def _answer_of(turn: Message) -> Message | None:
    """The reply `turn` was answered with: its own, or the held one it collected."""
    own = Message.objects.filter(reply_to=turn).first()
    if own is not None:
        return own
    held_id = turn.reply_handle.get("answered_with")
    return Message.objects.filter(pk=held_id).first() if held_id else None


def _wait_for_reply(inbound: Message, deadline: float) -> Message | None:
    key = services.reply_ready_key(inbound.pk)
    remaining = deadline - time.monotonic()
    if remaining > 0:
        # BLPOP's timeout has a resolution of seconds on older servers but accepts
        # fractions since Redis 6; never pass 0, which means "forever".
        delivery.redis_client().blpop([key], timeout=max(remaining, 0.01))
    return Message.objects.filter(reply_to=inbound).first()


def _speak(reply: Message, turn: Message) -> dict[str, Any]:
    with transaction.atomic():
        if Message.objects.filter(pk=reply.pk, status=Message.Status.PENDING).update(
            status=Message.Status.DELIVERED, delivered_at=timezone.now()
        ):
            DeliveryAttempt.objects.create(
                tenant_id=reply.tenant_id,
                message=reply,
                connector_id=reply.connector_id,
                attempt=1,
                outcome=DeliveryAttempt.Outcome.DELIVERED,
                via="sync_response",
                response_excerpt=f"answered turn {turn.pk}",
            )
        if reply.reply_to_id != turn.pk:
            # A later turn heard an earlier turn's reply: remember it, so a retry of this
            # turn says the same again instead of "still thinking" with nothing held.
            handle = {**turn.reply_handle, "answered_with": str(reply.pk)}
            Message.objects.filter(pk=turn.pk).update(reply_handle=handle)
    return aligenie.result(reply.text)
