"""DingTalk Stream mode, Django side: which connectors to run and what a message does.

Each robot message is persisted (the same `message_receive` path as HTTP mode,
de-duplicated on msgId) before the runner acknowledges it to DingTalk.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import close_old_connections

from connectors import dingtalk
from connectors.base import IngressError
from connectors.dingtalk_stream import StreamCredentials
from switchboard.bots.models import Connector
from switchboard.conversations.services import message_receive
from switchboard.hooks.views import dingtalk_check_target

logger = logging.getLogger(__name__)


def stream_connectors() -> dict[str, StreamCredentials]:
    """Enabled Stream-mode connectors, read afresh so changes apply without a restart."""
    try:
        rows = Connector.objects.filter(
            kind=Connector.Kind.DINGTALK,
            dingtalk_mode=Connector.DingTalkMode.STREAM,
            enabled=True,
            bot__is_active=True,
            tenant__is_active=True,
        ).exclude(app_key="")
        return {
            str(c.pk): StreamCredentials(client_id=c.app_key, client_secret=c.secret)
            for c in rows
            if c.secret
        }
    finally:
        close_old_connections()


def on_stream_message(connector_key: str, message_id: str, data: dict[str, Any]) -> bool:
    """Store one robot message; True only once it is committed (then it is ACKed)."""
    try:
        connector = (
            Connector.objects.select_related("bot", "tenant")
            .filter(pk=connector_key, kind=Connector.Kind.DINGTALK, enabled=True)
            .first()
        )
        if connector is None:
            return False
        try:
            message = dingtalk.parse_message(data)
            dingtalk_check_target(
                connector, robot_code=message.robot_code, corp_id=message.chatbot_corp_id
            )
        except IngressError as exc:
            # Acknowledge and drop: DingTalk never re-sends robot messages, and a message
            # that cannot be parsed never will be.
            logger.warning("stream message %s refused: %s", message_id, exc.message)
            return True
        message_receive(connector=connector, inbound=dingtalk.to_inbound(message))
        return True
    finally:
        # Runner threads outlive requests; never keep a connection that may have died.
        close_old_connections()
