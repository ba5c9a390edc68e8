"""Admission as the webhook ingress answers it over real HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("purge_queues")]


def test_rate_limited_webhook_gets_429_retry_after_and_nothing_is_stored(
    tenant: Any,
    connector: Any,
    post_webhook: Callable[..., httpx.Response],
    queued_tasks: Callable[[], int],
    licence_for: Callable[..., Any],
) -> None:
    from switchboard.conversations.models import Conversation, EndUser, Message

    licence_for(tenant, user_messages_per_minute=1)
    first = post_webhook(connector, {"message_id": "m-1", "user_id": "u-1", "text": "hi"})
    assert first.status_code == 202, first.text
    stored = (Message.objects.count(), Conversation.objects.count(), EndUser.objects.count())
    queued = queued_tasks()
    # The window still holds m-1: the second message is one too many for this user.
    second = post_webhook(connector, {"message_id": "m-2", "user_id": "u-1", "text": "again"})
    assert second.status_code == 429, second.text
    assert second.headers["content-type"].startswith("application/json")
    error = second.json()["error"]
    assert error["code"] == "rate_limited"
    assert "rate limit" in error["message"]
    assert 1 <= int(second.headers["retry-after"]) <= 60
    assert (Message.objects.count(), Conversation.objects.count(), EndUser.objects.count()) == (
        stored
    )
    assert queued_tasks() == queued


def test_new_user_beyond_a_hard_mau_limit_is_answered_not_rejected(
    tenant: Any,
    connector: Any,
    post_webhook: Callable[..., httpx.Response],
    licence_for: Callable[..., Any],
) -> None:
    licence_for(tenant, mau_limit=1)
    assert (
        post_webhook(connector, {"message_id": "a", "user_id": "u-1", "text": "hi"}).json()[
            "refusal"
        ]
        is None
    )
    body = post_webhook(connector, {"message_id": "b", "user_id": "u-2", "text": "hi"}).json()
    # Accepted (202): the end user gets the refusal text through the callback, like a reply.
    assert (body["status"], body["refusal"]) == ("refused", "mau_limit")
