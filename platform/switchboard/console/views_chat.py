"""Test chat: talk to one of the tenant's bots; the reply streams in over a WebSocket
(`consumers.ChatConsumer`). This page renders the transcript so far; `chat.js` does the
rest."""

from __future__ import annotations

import secrets
import uuid

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from switchboard.bots.models import Bot, Connector
from switchboard.console.access import console_view
from switchboard.console.consumers import (
    CONVERSATION_TOKEN,
    DEFAULT_CONVERSATION,
    MAX_TEXT_CHARS,
    console_conversation_key,
)
from switchboard.console.models import Role
from switchboard.conversations.models import Conversation, Message

# Enough to pick up a test where it was left; the whole of it is under Conversations.
TRANSCRIPT_TAIL = 50


@console_view(Role.ADMIN)
def chat(request: HttpRequest) -> HttpResponse:
    access = request.access  # type: ignore[attr-defined]
    if access.tenant is None:
        # An operator looking at all tenants: the chat talks as one tenant's staff.
        return render(request, "console/chat/chat.html", {"needs_tenant": True})
    active_bots = Bot.objects.filter(is_active=True)
    bots = list(access.scope(active_bots).order_by("name"))
    bot = bots[0] if bots else None
    if request.GET.get("bot"):
        try:
            bot_pk = uuid.UUID(request.GET["bot"])
        except ValueError:
            raise Http404("no such bot") from None
        bot = access.get_or_404(active_bots, pk=bot_pk)
    token = request.GET.get("c", "")
    if not CONVERSATION_TOKEN.match(token):
        token = DEFAULT_CONVERSATION
    conversation, transcript = None, []
    if bot is not None:
        conversation = (
            access.scope(Conversation.objects)
            .filter(
                bot=bot,
                connector__kind=Connector.Kind.CONSOLE,
                external_key=console_conversation_key(request.user.pk, token),
            )
            .first()
        )
    if conversation is not None:
        rows = (
            access.scope(Message.objects)
            .filter(conversation=conversation)
            .select_related("endpoint")
            .order_by("-created_at")[:TRANSCRIPT_TAIL]
        )
        transcript = list(reversed(list(rows)))
    context = {
        "bots": bots,
        "bot": bot,
        "conversation": conversation,
        "conversation_token": token,
        "new_conversation_token": secrets.token_urlsafe(6),
        "transcript": transcript,
        "max_chars": MAX_TEXT_CHARS,
    }
    return render(request, "console/chat/chat.html", context)
