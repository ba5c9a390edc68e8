"""DingTalk Stream mode: the official SDK's WebSocket client, run per connector."""

from __future__ import annotations

from connectors.dingtalk_stream.runner import (
    DEFAULT_API_BASE,
    Backoff,
    ConnectionOptions,
    OnMessage,
    StreamConnection,
    StreamCredentials,
    StreamSupervisor,
)

__all__ = [
    "DEFAULT_API_BASE",
    "Backoff",
    "ConnectionOptions",
    "OnMessage",
    "StreamConnection",
    "StreamCredentials",
    "StreamSupervisor",
]
