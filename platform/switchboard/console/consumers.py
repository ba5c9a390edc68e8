"""The console's test chat over a WebSocket (`ws/console/chat/`).

The browser sends `{"bot": id, "text": "...", "conversation"?: token}`; each message
goes through the normal pipeline (`message_receive`: admission, history, metering) on
the bot's hidden console connector, and the Celery worker generating the reply
publishes it token by token to the inbound message's group
(`conversations.services.live_group`).

Every frame the browser sends is answered, in order, by exactly one of
- `{"type": "accepted", "message": id, "conversation": id}`, followed later by
  `delta` events (`text`, `seq`) and one `done` (the stored reply's `text`, `reply`
  id, tokens, timings, endpoint) or `error` (generation failed; the worker may retry,
  in which case deltas start again);
- `{"type": "error", "code": ..., "error": ...}` without a message id: nothing stored.
A refused message (rate limit, quota) is accepted and answered at once with a `done`
carrying the refusal text and `refusal` reason.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, cast

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.db import transaction
from django.http import HttpRequest
from django.urls import path
from django.utils import translation
from django.utils.translation import gettext as _
from django_otp import DEVICE_ID_SESSION_KEY, user_has_device

from connectors.base import InboundMessage
from switchboard.bots.models import Bot, Connector
from switchboard.console.access import Access, access_for
from switchboard.console.signals import LANGUAGE_SESSION_KEY
from switchboard.conversations.models import Message
from switchboard.conversations.services import live_group, message_receive

# The conversation token picks one of a user's test conversations with a bot (the
# page's "new conversation"); it becomes part of a stored key, so it is kept plain.
CONVERSATION_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
DEFAULT_CONVERSATION = "main"
MAX_TEXT_CHARS = 4000
CONSOLE_CHANNEL = "console"
# Close codes in the application range (4000-4999), for a browser that wants a reason.
CLOSE_NO_ACCESS = 4403


def console_conversation_key(user_id: Any, token: str = DEFAULT_CONVERSATION) -> str:
    return f"console:{user_id}:{token}"


def console_connector(bot: Bot) -> Connector:
    """The bot's hidden console connector, made on first use.

    Made without `full_clean`: a licence's connector kinds are about the channels it
    sells, and the console is not one of them (admission does not refuse it either).
    """
    with transaction.atomic():
        # The bot's row lock makes concurrent first messages agree on one connector.
        Bot.objects.select_for_update().filter(pk=bot.pk).first()
        connector = (
            Connector.objects.for_tenant(bot.tenant_id)
            .filter(bot=bot, kind=Connector.Kind.CONSOLE)
            .first()
        )
        if connector is None:
            connector = Connector.objects.create(
                tenant_id=bot.tenant_id,
                bot=bot,
                kind=Connector.Kind.CONSOLE,
                name="Console test chat",
            )
    return connector


@dataclass(frozen=True)
class _ScopeRequest:
    """What `access_for` reads from a request, taken from the socket's scope."""

    user: Any
    session: Any


class ChatConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    access: Access
    joined: set[str]
    language: str | None

    async def connect(self) -> None:
        access = await self._access()
        if access is None:
            # Closing before accepting refuses the handshake (HTTP 403).
            await self.close(code=CLOSE_NO_ACCESS)
            return
        self.access = access
        self.joined = set()
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "joined", set()):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        # The console's language for this user, as on its pages.
        with translation.override(self.language):
            await self._handle(content)

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        # A frame that is not JSON gets an error answer, not a crashed socket.
        try:
            return json.loads(text_data)
        except ValueError:
            return None

    async def _handle(self, content: Any) -> None:
        if not isinstance(content, dict):
            await self._refuse("bad_request", _("Send a JSON object with a bot and a text."))
            return
        bot_id, text = content.get("bot"), content.get("text")
        token = content.get("conversation") or DEFAULT_CONVERSATION
        if not isinstance(text, str) or not text.strip():
            await self._refuse("empty", _("Type a message first."))
            return
        if len(text) > MAX_TEXT_CHARS:
            await self._refuse(
                "too_long",
                _("A message may have at most %(count)d characters.") % {"count": MAX_TEXT_CHARS},
            )
            return
        if not isinstance(token, str) or not CONVERSATION_TOKEN.match(token):
            await self._refuse("bad_request", _("That conversation name is not valid."))
            return
        try:
            bot_pk = uuid.UUID(str(bot_id))
        except ValueError:
            await self._refuse("not_found", _("No such bot."))
            return
        answer = await self._receive(bot_pk, text, token)
        if answer is None:
            # Another tenant's bot looks exactly like a missing one.
            await self._refuse("not_found", _("No such bot."))
            return
        for event in answer:
            await self.send_json(event)

    async def _refuse(self, code: str, message: str) -> None:
        await self.send_json({"type": "error", "code": code, "error": message})

    @database_sync_to_async
    def _access(self) -> Access | None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return None
        session = self.scope.get("session") or {}
        if user_has_device(user) and not session.get(DEVICE_ID_SESSION_KEY):
            # Signed in with the password but not yet with the second factor.
            return None
        access = access_for(cast(HttpRequest, _ScopeRequest(user=user, session=session)))
        self.language = session.get(LANGUAGE_SESSION_KEY)
        # Tenant admins, and operators looking into one tenant: the chat sends real,
        # metered messages, so viewers (read only) may not.
        if access is None or not access.can_edit or access.tenant is None:
            return None
        return access

    @database_sync_to_async
    def _receive(self, bot_pk: uuid.UUID, text: str, token: str) -> list[dict[str, Any]] | None:
        bot = self.access.scope(Bot.objects.filter(is_active=True)).filter(pk=bot_pk).first()
        if bot is None:
            return None
        user = self.scope["user"]
        connector = console_connector(bot)
        inbound = InboundMessage(
            channel=CONSOLE_CHANNEL,
            provider_message_id=f"console-{uuid.uuid4().hex}",
            user_id=str(user.pk),
            user_name=user.get_username(),
            conversation_key=console_conversation_key(user.pk, token),
            text=text,
        )
        with transaction.atomic():
            message = message_receive(connector=connector, inbound=inbound).message
            if message.status == Message.Status.RECEIVED:
                # Joined before the commit that enqueues the generation, so the worker
                # cannot publish a token before this socket listens.
                group = live_group(message.pk)
                async_to_sync(self.channel_layer.group_add)(group, self.channel_name)
                self.joined.add(group)
        events: list[dict[str, Any]] = [
            {
                "type": "accepted",
                "message": str(message.pk),
                "conversation": message.conversation_id,
            }
        ]
        if message.status != Message.Status.RECEIVED:
            # Answered at once, without generation: a refusal.
            reply = Message.objects.for_tenant(message.tenant_id).filter(reply_to=message).first()
            events.append(
                {
                    "type": "done",
                    "message": str(message.pk),
                    "reply": str(reply.pk) if reply else None,
                    "text": reply.text if reply else "",
                    "refusal": message.refusal,
                }
            )
        return events

    # --- events the worker publishes to the group (`_LiveReply`) ---------------------

    async def chat_delta(self, event: dict[str, Any]) -> None:
        await self.send_json(
            {
                "type": "delta",
                "message": event["message"],
                "seq": event["seq"],
                "text": event["text"],
            }
        )

    async def chat_done(self, event: dict[str, Any]) -> None:
        group = live_group(event["message"])
        await self.channel_layer.group_discard(group, self.channel_name)
        self.joined.discard(group)
        fields = (
            "message", "reply", "text", "prompt_tokens", "completion_tokens",
            "ttft_ms", "latency_ms", "endpoint", "finish_reason",
        )  # fmt: skip
        await self.send_json({"type": "done", **{key: event.get(key) for key in fields}})

    async def chat_error(self, event: dict[str, Any]) -> None:
        # The group stays joined: the worker retries what may succeed later.
        await self.send_json(
            {
                "type": "error",
                "code": "generation_failed",
                "message": event["message"],
                "error": event["error"],
            }
        )


websocket_urlpatterns = [path("ws/console/chat/", ChatConsumer.as_asgi())]
