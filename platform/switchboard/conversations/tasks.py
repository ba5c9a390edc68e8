"""Celery tasks: thin wrappers that take ids, name their queue and retry policy."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings

from connectors.base import DeliveryError
from connectors.webhook import schedule
from inference import Busy, InferenceError, PartialFailure, PoolUnavailable
from switchboard.bots.models import Connector
from switchboard.conversations import delivery, services
from switchboard.conversations.models import Message
from switchboard.pool.runtime import breakers_publish

logger = logging.getLogger(__name__)

GENERATION_MAX_RETRIES = 3
# Worth another try later: the whole pool was down or saturated, or a stream broke
# midway (nothing had reached the end user yet on this channel).
_GENERATION_RETRYABLE = (PoolUnavailable, Busy, PartialFailure)


def _backoff(retries: int, factor: int, maximum: int) -> int:
    # Full jitter spreads the retries of many failed deliveries instead of syncing them.
    return get_exponential_backoff_interval(
        factor=factor, retries=retries, maximum=maximum, full_jitter=True
    )


@shared_task(bind=True, queue="chat", max_retries=GENERATION_MAX_RETRIES, acks_late=True)
def generate_reply(self: Task, message_id: str) -> None:
    try:
        services.message_generate_reply(message_id=message_id)
    except InferenceError as exc:
        breakers_publish()
        if isinstance(exc, _GENERATION_RETRYABLE) and self.request.retries < self.max_retries:
            logger.warning("generation of %s failed, will retry: %s", message_id, exc)
            raise self.retry(
                countdown=_backoff(self.request.retries, factor=2, maximum=60), exc=exc
            ) from exc
        logger.error("generation of %s failed for good: %s", message_id, exc)
        services.message_fail(message_id=message_id, error=str(exc))
    else:
        breakers_publish()


# max_retries=None: the retry budget is ours (_may_retry); Celery's default of 3 would
# make `self.retry` raise instead of retrying once pacing and failures add up to 4.
@shared_task(bind=True, queue="default", acks_late=True, max_retries=None)
def deliver_reply(self: Task, message_id: str, replay: bool = False, paced: int = 0) -> None:
    # Celery counts every retry; waits for the conversation's turn (`paced` of them) are
    # not failed attempts and must not use up the reply's retry budget.
    retries = self.request.retries - paced
    # Known before the attempt, so a failure that uses up the retries is logged `failed`,
    # not `retrying`.
    final = not _may_retry(retries, _connector_kind(message_id))
    try:
        delivery.reply_deliver(message_id=message_id, replay=replay, final=final)
    except delivery.Paced as wait:
        # Not an attempt: the conversation just sent something, wait for its turn.
        raise self.retry(
            countdown=wait.wait_s,
            max_retries=None,
            kwargs={"replay": replay, "paced": paced + 1},
        ) from None
    except DeliveryError as exc:
        countdown = _delivery_delay(retries, exc, message_id)
        if exc.permanent or countdown is None:
            logger.error("delivery of %s abandoned: %s", message_id, exc.message)
            delivery.reply_mark_undeliverable(message_id=message_id, error=exc)
            return
        logger.warning(
            "delivery of %s failed (%s); retry in %.1fs", message_id, exc.message, countdown
        )
        # Recorded in PostgreSQL too: if Redis loses the delayed retry, the sweeper finds it.
        delivery.reply_note_retry(message_id=message_id, error=exc, countdown=countdown)
        raise self.retry(countdown=countdown, max_retries=None, exc=exc) from exc


def _connector_kind(message_id: str) -> str | None:
    return Message.objects.filter(pk=message_id).values_list("connector__kind", flat=True).first()


def _uses_schedule(kind: str | None) -> bool:
    return kind == Connector.Kind.WEBHOOK and settings.SWITCHBOARD_WEBHOOK_RETRY == "standard"


def _may_retry(retries: int, kind: str | None) -> bool:
    """Whether a failure after `retries` retries may still be retried."""
    if _uses_schedule(kind):
        return retries + 1 < schedule.max_attempts()
    return retries < settings.SWITCHBOARD_CALLBACK_MAX_RETRIES


def _delivery_delay(retries: int, exc: DeliveryError, message_id: str) -> float | None:
    """Seconds until the next attempt, or None when the reply's retries are used up."""
    kind = _connector_kind(message_id)
    if not _may_retry(retries, kind):
        return None
    if _uses_schedule(kind):
        # The Standard Webhooks schedule: about three days of retries.
        return schedule.next_delay(retries + 1)
    backoff = _backoff(
        retries,
        factor=settings.SWITCHBOARD_CALLBACK_BACKOFF_BASE_S,
        maximum=settings.SWITCHBOARD_CALLBACK_BACKOFF_MAX_S,
    )
    # A provider's own "come back in N seconds" (DingTalk throttling) wins over ours.
    return max(backoff, exc.retry_after_s or 0.0)


@shared_task(queue="default")
def requeue_stalled_messages() -> dict[str, int]:
    return services.messages_requeue_stalled()
