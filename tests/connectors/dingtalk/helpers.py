"""Shared pieces of the DingTalk sender tests: a settable clock and reply handles."""

from __future__ import annotations

from typing import Any

from connectors.dingtalk import DingTalkSender, SendResult, parse_message, to_inbound
from tests.support.fake_dingtalk import FakeDingTalk

T0 = 1_700_000_000.0  # seconds; the fake clock's start
STAFF = "staff-001"


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_handle(ding: FakeDingTalk, *, group: bool = False, **kw: Any) -> dict[str, Any]:
    """The reply handle of a callback the fake signed at T0, as the ingress would store it."""
    _, body = ding.make_callback(
        conversation_type="2" if group else "1", now_ms=int(T0 * 1000), **kw
    )
    return to_inbound(parse_message(body)).reply_handle


def send(
    sender: DingTalkSender, ding: FakeDingTalk, handle: dict[str, Any], text: str, **kw: Any
) -> SendResult:
    return sender.send(
        handle=handle,
        text=text,
        app_key=ding.app_key,
        app_secret=ding.app_secret,
        robot_code=kw.pop("robot_code", ding.robot_code),
        **kw,
    )


def expire(clock: Clock) -> None:
    """Move past the session webhook's 90 minutes, so replies take the OpenAPI."""
    clock.now = T0 + 5400
