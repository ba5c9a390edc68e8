"""Assertions shared by every ingress's bad-input tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from switchboard.conversations.models import Conversation, EndUser, Message


def assert_refused(
    response: httpx.Response,
    status: int,
    code: str,
    mentions: str,
    queued_tasks: Callable[[], int],
) -> dict[str, Any]:
    """A clear JSON error, and nothing stored or queued."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    assert mentions in error["message"]
    assert Message.objects.count() == 0
    assert Conversation.objects.count() == 0
    assert EndUser.objects.count() == 0
    assert queued_tasks() == 0
    return error
