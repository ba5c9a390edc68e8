"""Completions answered while the caller waits: the tenant API's synchronous and streamed
sends, and the OpenAI-compatible endpoint.

Other channels acknowledge at once and answer later through a worker. Here the HTTP
client holds the connection open for the answer, so the web process asks the pool itself:
a queue hop would add most of the latency a proxy is allowed. The message still goes
through the same admission (licence, MAU, rate limits, quota), the same pool router and
the same usage ledger, and it is stored claimed before the pool is asked, so a web
process that dies mid-call leaves a message the sweeper answers later, not a lost one.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from connectors.base import InboundMessage
from connectors.webhook import generate_secret
from inference import ChatRequest, ChatResult, InferenceError, Priority, RouteContext, TokenDelta
from switchboard.bots.models import Bot, Connector
from switchboard.conversations import prompts, selectors
from switchboard.conversations.models import Message
from switchboard.conversations.services import message_receive
from switchboard.metering import ledger
from switchboard.metering.models import UsageRecord
from switchboard.pool.models import InferenceEndpoint
from switchboard.pool.runtime import worker_pool

API_CHANNEL = "api"


class ClientGone(Exception):
    """The HTTP client stopped listening; the stream is abandoned."""


@dataclass(frozen=True)
class CompletionRequest:
    bot: Bot
    user_id: str
    conversation_key: str
    # The end user's turn, stored as the inbound message.
    text: str
    user_name: str = ""
    # The whole conversation as the caller sent it (OpenAI-style, stateless); None
    # builds the prompt from the stored history, as the worker does.
    messages: Sequence[dict[str, str]] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    deadline_s: float | None = None
    reply_handle: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Started:
    inbound: Message
    bot: Bot
    chat: ChatRequest
    route: RouteContext


@cache
def api_executor() -> ThreadPoolExecutor:
    """The threads that answer API calls the client waits for. Each keeps its own
    database connection: size PostgreSQL's max_connections for them (README, "Tenant
    API")."""
    return ThreadPoolExecutor(
        max_workers=settings.SWITCHBOARD_API_THREADS, thread_name_prefix="api"
    )


# The hidden API connector of each bot, by bot id: made once, never changed.
_connectors: dict[uuid.UUID, Connector] = {}
_connectors_lock = threading.Lock()


def api_connector(bot: Bot) -> Connector:
    """The bot's hidden tenant-API connector, made on first use.

    Made without `full_clean`, like the console's: it has no ingress URL and no secret
    to validate; whether the tenant's licence allows the API is admission's question.
    """
    connector = _connectors.get(bot.pk)
    if connector is None:
        with transaction.atomic():
            # The bot's row lock makes concurrent first messages agree on one connector.
            Bot.objects.select_for_update().filter(pk=bot.pk).first()
            connector = (
                Connector.objects.for_tenant(bot.tenant_id)
                .filter(bot=bot, kind=Connector.Kind.API)
                .first()
            )
            if connector is None:
                connector = Connector.objects.create(
                    tenant_id=bot.tenant_id,
                    bot=bot,
                    kind=Connector.Kind.API,
                    name="Tenant API",
                    # Signs callbacks of asynchronous sends; the tenant gets it by
                    # rotating it (POST /api/v1/bots/{id}/callback-secret/).
                    secret=generate_secret(),
                )
        with _connectors_lock:
            _connectors[bot.pk] = connector
    # A copy with the caller's bot: admission reads the bot's model, language and tenant.
    copy = Connector(**{f.attname: getattr(connector, f.attname) for f in Connector._meta.fields})
    copy._state.adding = False
    copy.bot = bot
    if "tenant" in bot._state.fields_cache:
        copy.tenant = bot.tenant
    return copy


def completion_start(request: CompletionRequest) -> Started:
    """Admit and store the caller's turn, claimed for this process. Raises
    `conversations.services.Refused` when admission says no (nothing is stored then)."""
    bot = request.bot
    connector = api_connector(bot)
    inbound = message_receive(
        connector=connector,
        inbound=InboundMessage(
            channel=API_CHANNEL,
            provider_message_id=f"api-{uuid.uuid4().hex}",
            user_id=request.user_id,
            user_name=request.user_name,
            conversation_key=request.conversation_key,
            text=request.text,
            reply_handle=request.reply_handle,
        ),
        inline=True,
    ).message
    if request.messages is not None:
        system = [{"role": "system", "content": bot.system_prompt}] if bot.system_prompt else []
        messages = [*system, *request.messages]
    else:
        messages = prompts.build_chat_messages(
            system_prompt=bot.system_prompt,
            history=selectors.conversation_history(message=inbound, limit=bot.history_window),
            user_text=inbound.text,
        )
    max_tokens = bot.max_tokens if request.max_tokens is None else request.max_tokens
    chat = ChatRequest(
        model=bot.model_name,
        messages=messages,
        # The bot's setting is the ceiling: a caller may ask for less, never more.
        max_tokens=min(max_tokens, bot.max_tokens),
        temperature=bot.temperature if request.temperature is None else request.temperature,
        stop=request.stop,
        seed=request.seed,
    )
    route = RouteContext(
        affinity_key=str(inbound.conversation_id),
        tenant=str(inbound.tenant_id),
        priority=Priority.CHAT,
        strategy=bot.routing_strategy,
        deadline_s=request.deadline_s or settings.SWITCHBOARD_INFERENCE_TOTAL_S,
    )
    return Started(inbound=inbound, bot=bot, chat=chat, route=route)


def completion_run(
    started: Started,
    *,
    on_delta: Callable[[str], None] | None = None,
    cancelled: threading.Event | None = None,
) -> Message:
    """Ask the pool and store the reply and its usage; returns the stored reply.

    With `on_delta` the pool streams and each piece of text is handed over as it comes;
    `cancelled` set by the caller abandons the stream at the next piece. Inference
    errors are recorded (message failed, usage row) and raised.
    """
    pool = worker_pool()
    pieces = 0
    result: ChatResult | None = None
    try:
        if on_delta is None:
            result = pool.chat(started.chat, started.route, stream=False)
        else:
            for item in pool.stream(started.chat, started.route):
                if cancelled is not None and cancelled.is_set():
                    raise ClientGone
                if isinstance(item, TokenDelta):
                    if item.text:
                        pieces += 1
                        on_delta(item.text)
                else:
                    result = item
    except InferenceError as exc:
        completion_fail(
            started,
            error=str(exc),
            outcome=ledger.outcome_of(exc),
            endpoint=exc.endpoint.name if exc.endpoint else "",
        )
        raise
    except ClientGone:
        # The tokens so far were generated, whoever read them: vLLM streams about one
        # token per piece, which is the best count there is without a usage block.
        completion_fail(
            started,
            error="the client disconnected",
            outcome=UsageRecord.Outcome.PARTIAL,
            completion_tokens=pieces,
        )
        raise
    assert result is not None  # the pool ends every stream with its result or raises
    return completion_finish(started, result)


def _endpoint_id(name: str) -> int | None:
    # Not cached: an endpoint removed and added again under its name gets a new row.
    return InferenceEndpoint.objects.filter(name=name).values_list("pk", flat=True).first()


def completion_finish(started: Started, result: ChatResult) -> Message:
    inbound = started.inbound
    now = timezone.now()
    timings = {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "ttft_ms": result.ttft_ms,
        "latency_ms": result.latency_ms,
        "endpoint_id": _endpoint_id(result.endpoint.name),
    }
    with transaction.atomic():
        outbound = Message.objects.create(
            tenant_id=inbound.tenant_id,
            conversation_id=inbound.conversation_id,
            connector_id=inbound.connector_id,
            direction=Message.Direction.OUTBOUND,
            text=result.text,
            # Handed to the caller in this very response: nothing left to deliver.
            status=Message.Status.DELIVERED,
            delivered_at=now,
            reply_to=inbound,
            finish_reason=result.finish_reason,
            **timings,
        )
        Message.objects.filter(pk=inbound.pk).update(
            status=Message.Status.REPLIED, error="", **timings
        )
        ledger.usage_record(
            inbound=inbound,
            bot=started.bot,
            outcome=UsageRecord.Outcome.OK,
            endpoint=result.endpoint.name,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            ttft_ms=result.ttft_ms,
            latency_ms=result.latency_ms,
            at=now,
        )
    return outbound


def completion_fail(
    started: Started,
    *,
    error: str,
    outcome: str,
    endpoint: str = "",
    completion_tokens: int = 0,
) -> None:
    inbound = started.inbound
    with transaction.atomic():
        Message.objects.filter(pk=inbound.pk, status=Message.Status.PROCESSING).update(
            status=Message.Status.FAILED, error=error[:2000]
        )
        ledger.usage_record(
            inbound=inbound,
            bot=started.bot,
            outcome=outcome,
            endpoint=endpoint,
            completion_tokens=completion_tokens,
        )
