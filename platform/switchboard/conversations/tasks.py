"""Celery tasks: thin wrappers that take ids, name their queue and retry policy."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings

from connectors.base import DeliveryError
from inference import Busy, InferenceError, PartialFailure, PoolUnavailable
from switchboard.conversations import services

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
        if isinstance(exc, _GENERATION_RETRYABLE) and self.request.retries < self.max_retries:
            logger.warning("generation of %s failed, will retry: %s", message_id, exc)
            raise self.retry(
                countdown=_backoff(self.request.retries, factor=2, maximum=60), exc=exc
            ) from exc
        logger.error("generation of %s failed for good: %s", message_id, exc)
        services.message_fail(message_id=message_id, error=str(exc))


@shared_task(bind=True, queue="default", acks_late=True)
def deliver_reply(self: Task, message_id: str) -> None:
    try:
        services.reply_deliver(message_id=message_id)
    except DeliveryError as exc:
        retries = self.request.retries
        if exc.permanent or retries >= settings.SWITCHBOARD_CALLBACK_MAX_RETRIES:
            logger.error("delivery of %s abandoned: %s", message_id, exc.message)
            services.reply_mark_undeliverable(message_id=message_id, error=exc)
            return
        countdown = _backoff(
            retries,
            factor=settings.SWITCHBOARD_CALLBACK_BACKOFF_BASE_S,
            maximum=settings.SWITCHBOARD_CALLBACK_BACKOFF_MAX_S,
        )
        logger.warning(
            "delivery of %s failed (%s); retry in %.1fs", message_id, exc.message, countdown
        )
        # Recorded in PostgreSQL too: if Redis loses the delayed retry, the sweeper finds it.
        services.reply_note_retry(message_id=message_id, error=exc, countdown=countdown)
        raise self.retry(
            countdown=countdown, max_retries=settings.SWITCHBOARD_CALLBACK_MAX_RETRIES, exc=exc
        ) from exc


@shared_task(queue="default")
def requeue_stalled_messages() -> dict[str, int]:
    return services.messages_requeue_stalled()
