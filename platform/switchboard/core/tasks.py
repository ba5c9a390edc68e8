"""Housekeeping run by Celery beat."""

from __future__ import annotations

import io

from celery import shared_task
from django.core.management import call_command


@shared_task(queue="default")
def prune_conversations() -> str:
    """The retention policy, daily (`manage.py prune_conversations`; with
    SWITCHBOARD_RETENTION_DAYS at 0, the default, every conversation is kept)."""
    out = io.StringIO()
    call_command("prune_conversations", stdout=out)
    return out.getvalue().strip().splitlines()[-1]
