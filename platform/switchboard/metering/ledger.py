"""The usage ledger: one append-only row per inference call, written with its outcome."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from inference import Busy, InferenceError, PartialFailure
from switchboard.metering import admission
from switchboard.metering.models import UsageRecord


def usage_record(
    *,
    inbound: Any,
    bot: Any,
    outcome: str,
    endpoint: str = "",
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    ttft_ms: float | None = None,
    latency_ms: float | None = None,
    at: datetime | None = None,
) -> UsageRecord:
    """Append the call answering `inbound` (a conversations.Message). Call it inside the
    transaction that stores the call's result, so the two commit together."""
    at = at or timezone.now()
    record = UsageRecord.objects.create(
        tenant_id=inbound.tenant_id,
        bot_id=bot.pk,
        connector_id=inbound.connector_id,
        end_user_id=inbound.conversation.end_user_id,
        message_id=inbound.pk,
        endpoint=endpoint,
        model_name=bot.model_name,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        ttft_ms=ttft_ms,
        latency_ms=latency_ms,
        outcome=outcome,
        created_at=at,
    )
    tokens = prompt_tokens + completion_tokens
    if tokens:
        tenant_id = inbound.tenant_id
        transaction.on_commit(
            lambda: admission.tokens_used(tenant_id=tenant_id, tokens=tokens, at=at)
        )
    return record


def outcome_of(exc: InferenceError) -> str:
    if isinstance(exc, PartialFailure):
        return UsageRecord.Outcome.PARTIAL
    if isinstance(exc, Busy):
        return UsageRecord.Outcome.BUSY
    return UsageRecord.Outcome.ERROR
