"""Where observability listens: model saves (counters, the delivery log line) and
Celery's task signals (the task log line).

Listening to signals keeps metrics and logs out of the message path's code: the
services that store messages, usage and delivery attempts need not know they are
watched. Each of these rows is only ever inserted (usage and delivery attempts are
append-only), so `created` saves see every one.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import task_prerun
from django.db.models.signals import post_save

from switchboard.observability import counters

task_logger = logging.getLogger("switchboard.tasks")
delivery_logger = logging.getLogger("switchboard.delivery")

# Task arguments are ids in this project; a long one is cut, never logged whole.
_MAX_ARG_CHARS = 100


def _message_saved(sender: Any, instance: Any, created: bool, using: str, **kwargs: Any) -> None:
    if created and instance.direction == "in":
        counters.message_stored(instance, using=using)


def _usage_saved(sender: Any, instance: Any, created: bool, using: str, **kwargs: Any) -> None:
    if created:
        counters.usage_recorded(instance, using=using)


def _delivery_saved(sender: Any, instance: Any, created: bool, using: str, **kwargs: Any) -> None:
    if not created:
        return
    counters.delivery_attempted(instance, using=using)
    # The delivery's own log line: with the request id that came with the task, it ties
    # the provider's request to what was sent back.
    level = logging.WARNING if instance.outcome == "failed" else logging.INFO
    delivery_logger.log(
        level,
        "reply %s delivery attempt %d: %s",
        instance.message_id,
        instance.attempt,
        instance.outcome,
        extra={
            "message_id": str(instance.message_id),
            "connector_id": str(instance.connector_id),
            "attempt": instance.attempt,
            "outcome": instance.outcome,
            "via": instance.via,
            "http_status": instance.http_status,
            "latency_ms": instance.latency_ms,
            "replay": instance.replay,
        },
    )


def _task_started(task_id: str, task: Any, args: Any = None, **kwargs: Any) -> None:
    # Runs after django-guid's own task_prerun receiver (its app comes first in
    # INSTALLED_APPS), so the request id from the task's headers is already in place.
    # Celery logs the end ("succeeded in", "retry", "raised") itself, before django-guid
    # clears the id.
    task_logger.info(
        "task %s[%s] started",
        task.name,
        task_id,
        extra={
            "task": task.name,
            "task_id": task_id,
            "task_args": [str(arg)[:_MAX_ARG_CHARS] for arg in (args or ())],
            "retries": getattr(task.request, "retries", 0),
        },
    )


def connect() -> None:
    from switchboard.conversations.models import DeliveryAttempt, Message
    from switchboard.metering.models import UsageRecord

    uid = "switchboard.observability"
    post_save.connect(_message_saved, sender=Message, dispatch_uid=f"{uid}.message")
    post_save.connect(_usage_saved, sender=UsageRecord, dispatch_uid=f"{uid}.usage")
    post_save.connect(_delivery_saved, sender=DeliveryAttempt, dispatch_uid=f"{uid}.delivery")
    task_prerun.connect(_task_started, weak=False, dispatch_uid=f"{uid}.task_prerun")
