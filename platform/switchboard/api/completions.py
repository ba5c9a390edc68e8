"""Completions answered while the caller waits: the OpenAI-compatible endpoint and the
REST API's streamed sends.

Other channels acknowledge at once and answer later through a worker. Here the HTTP
client holds the connection for the answer, so the web process asks the pool itself: a
queue hop would cost more than a proxy's whole latency budget (BENCHMARKS.md, section
4). The message goes through the same admission (licence, MAU, rate limits, quota), the
same pool router and the same usage ledger as every channel's, arranged so that a
returning user costs no database round trip before the pool is asked and one after:

- what a request needs to know (its bot's API connector, the end user and whether they
  are counted in this month's MAU, the conversation's id) is kept per process for a
  short while; what changes (MAU counting, rate windows, quota) is decided by admission
  on every request, as for every channel;
- the turn, the reply, the usage record and the conversation's last-message time are
  written by one statement once the answer is complete, from a thread: the
  OpenAI-compatible endpoint sends the answer first, the REST stream's `done` event
  carries the stored reply.

The model call itself runs on the event loop (`completion_stream`, `Pool.arun`): a call
streaming for minutes holds no thread, and a client that hangs up cancels it.

Nothing is stored before the pool answers: a web process that dies mid-call leaves
nothing (its client sees the connection drop and may retry); admission's MAU count, if
it was the user's first message this month, stands, as the user did write to the bot.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from types import SimpleNamespace
from typing import Any

import psycopg
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, close_old_connections, connection, models, transaction
from django.utils import timezone
from django_guid import get_guid, set_guid

from connectors.base import InboundMessage
from connectors.webhook import generate_secret
from inference import ChatRequest, ChatResult, InferenceError, Priority, RouteContext, TokenDelta
from switchboard.bots.models import Bot, Connector
from switchboard.conversations import prompts, selectors
from switchboard.conversations.models import Conversation, EndUser, Message
from switchboard.conversations.services import Refused, end_user_touch
from switchboard.licensing import replies
from switchboard.metering import admission, ledger
from switchboard.metering.models import UsageRecord
from switchboard.observability import counters
from switchboard.pool.runtime import worker_pool

API_CHANNEL = "api"

# What the tenant API says when admission refuses a message (both of its APIs).
REFUSAL_MESSAGES = {
    replies.RATE_LIMITED: "Too many requests: the tenant's or this end user's rate limit "
    "is reached.",
    replies.QUOTA_EXHAUSTED: "The tenant's monthly token quota is used up.",
    replies.MAU_LIMIT: "The tenant's monthly active user limit is reached: this end user "
    "cannot be admitted.",
    replies.CONNECTOR_NOT_LICENSED: "The tenant's licence does not include the API channel.",
}

logger = logging.getLogger(__name__)


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
    # The caller's turn, not stored yet (see the module's docstring).
    inbound: Message
    end_user_id: int
    bot: Bot
    chat: ChatRequest
    route: RouteContext


@cache
def api_executor() -> ThreadPoolExecutor:
    """The threads doing the database work of API calls the client waits for (checks
    and admission before the model call, the write after it). Each keeps its own
    database connection: size PostgreSQL's max_connections for them (README, "Tenant
    API")."""
    return ThreadPoolExecutor(
        max_workers=settings.SWITCHBOARD_API_THREADS, thread_name_prefix="api"
    )


class Recent:
    """A small per-process map whose entries expire: what a request needs to know and
    rarely changes. Entries are replaced whole, so threads share it without a lock."""

    def __init__(self, ttl_s: float, size: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.size = size
        self._items: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> Any:
        item = self._items.get(key)
        if item is None or item[0] < time.monotonic():
            return None
        return item[1]

    def put(self, key: Any, value: Any) -> None:
        if len(self._items) >= self.size:
            self._items.clear()  # crude, but bounded: the next requests refill it
        self._items[key] = (time.monotonic() + self.ttl_s, value)

    def drop(self, key: Any) -> None:
        self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()


# A connector is never changed in a way that matters here; end users and conversations
# are found again after a minute (a conversation pruned meanwhile is recreated).
_connectors = Recent(ttl_s=3600)
_end_users = Recent(ttl_s=60)
_conversations = Recent(ttl_s=60)


def caches_clear() -> None:
    """Forget what this process remembers (tests that rebuild the database)."""
    for recent in (_connectors, _end_users, _conversations):
        recent.clear()


def api_connector(bot: Bot) -> Connector:
    """The bot's hidden tenant-API connector, made on first use.

    Made without `full_clean`, like the console's: it has no ingress URL to validate;
    whether the tenant's licence allows the API is admission's question.
    """
    connector: Connector | None = _connectors.get(bot.pk)
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
        _connectors.put(bot.pk, connector)
    # A copy with the caller's bot: admission reads the bot's model, language and tenant.
    copy = Connector(**{f.attname: getattr(connector, f.attname) for f in Connector._meta.fields})
    copy._state.adding = False
    copy.bot = bot
    if "tenant" in bot._state.fields_cache:
        copy.tenant = bot.tenant
    return copy


def _end_user(connector: Connector, request: CompletionRequest, now: datetime) -> EndUser:
    key = (connector.tenant_id, request.user_id)
    end_user: EndUser | None = _end_users.get(key)
    if end_user is None:
        inbound = InboundMessage(
            channel=API_CHANNEL,
            provider_message_id="",
            user_id=request.user_id,
            user_name=request.user_name,
            conversation_key=request.conversation_key,
            text="",
        )
        end_user = end_user_touch(connector=connector, inbound=inbound, now=now)
        _end_users.put(key, end_user)
    return end_user


def _conversation_id(connector: Connector, end_user: EndUser, key: str) -> int:
    cached: int | None = _conversations.get((connector.pk, key))
    if cached is None:
        conversation, _ = Conversation.objects.get_or_create(
            connector_id=connector.pk,
            external_key=key,
            defaults={
                "tenant_id": connector.tenant_id,
                "bot_id": connector.bot_id,
                "end_user": end_user,
            },
        )
        cached = conversation.pk
        _conversations.put((connector.pk, key), cached)
    return cached


def _admit(connector: Connector, end_user: EndUser, now: datetime) -> None:
    model_name = connector.bot.model_name
    month = admission.month_of(now)
    counted = end_user.counted_month == month and model_name in (end_user.counted_models or [])

    def decide() -> admission.Decision:
        return admission.admit(
            tenant_id=connector.tenant_id,
            end_user=end_user,
            connector_kind=connector.kind,
            model_name=model_name,
            now=now,
        )

    if counted:
        # A returning user: only Redis's rate windows and quota are asked.
        decision = decide()
    else:
        # Counting into MAU writes rows that must commit (or roll back) together.
        with transaction.atomic():
            decision = decide()
    if not decision.admitted:
        counters.refusal(
            tenant_id=connector.tenant_id, connector_kind=connector.kind, reason=decision.reason
        )
        raise Refused(decision.reason, decision.retry_after_s)


def completion_start(request: CompletionRequest) -> Started:
    """Admit the caller's turn. Raises `conversations.services.Refused` when admission
    says no (nothing is stored then)."""
    bot = request.bot
    now = timezone.now()
    connector = api_connector(bot)
    end_user = _end_user(connector, request, now)
    conversation_id = _conversation_id(connector, end_user, request.conversation_key)
    _admit(connector, end_user, now)
    inbound = Message(
        id=uuid.uuid4(),
        tenant_id=connector.tenant_id,
        conversation_id=conversation_id,
        connector_id=connector.pk,
        direction=Message.Direction.INBOUND,
        text=request.text,
        provider_message_id=f"api-{uuid.uuid4().hex}",
        reply_handle=request.reply_handle,
        status=Message.Status.PROCESSING,
        attempts=1,
        created_at=now,
        claimed_at=now,
    )
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
        affinity_key=str(conversation_id),
        tenant=str(inbound.tenant_id),
        priority=Priority.CHAT,
        strategy=bot.routing_strategy,
        deadline_s=request.deadline_s or settings.SWITCHBOARD_INFERENCE_TOTAL_S,
    )
    return Started(inbound=inbound, end_user_id=end_user.pk, bot=bot, chat=chat, route=route)


async def completion_stream(started: Started) -> AsyncIterator[str | ChatResult]:
    """Ask the pool from the event loop: the text as it comes, then the `ChatResult`.

    A call that does not complete is recorded here (`record_soon`): an inference error
    (then raised) or, when the consumer stops iterating (its client hung up), a partial
    call with the pieces sent so far. A complete result is the caller's to store: the
    REST stream waits for the stored reply, the OpenAI-compatible endpoint does not.
    """
    pieces = 0
    result: ChatResult | None = None
    try:
        async for item in worker_pool().arun(started.chat, started.route, stream=True):
            if isinstance(item, TokenDelta):
                if item.text:
                    pieces += 1
                    yield item.text
            else:
                result = item
    except InferenceError as exc:
        record_failure_soon(started, exc)
        raise
    except (asyncio.CancelledError, GeneratorExit):
        # The tokens so far were generated, whoever read them: vLLM streams about one
        # token per piece, which is the best count there is without a usage block.
        record_soon(
            started,
            None,
            error="the client disconnected",
            outcome=UsageRecord.Outcome.PARTIAL,
            completion_tokens=pieces,
        )
        raise
    except Exception:
        record_soon(started, None, error="internal error", outcome=UsageRecord.Outcome.ERROR)
        raise
    assert result is not None  # the pool ends every stream with its result or raises
    yield result


def record_soon(started: Started, result: ChatResult | None, **outcome: Any) -> Future[Any]:
    """Store the call from a thread (`completion_record`) without waiting for it: from
    the event loop, once the answer is on its way or the client is gone."""
    request_id = get_guid() or ""

    def write() -> Message | None:
        set_guid(request_id)
        connections_checked()
        return completion_record(started, result, **outcome)

    def logged(future: Future[Any]) -> None:
        if future.exception() is not None:
            # Reaches nobody but the log, which is where a failed ledger write must show.
            logger.error("could not record a chat completion", exc_info=future.exception())

    future = api_executor().submit(write)
    future.add_done_callback(logged)
    return future


def record_failure_soon(started: Started, exc: InferenceError) -> None:
    record_soon(
        started,
        None,
        error=str(exc),
        outcome=ledger.outcome_of(exc),
        endpoint=exc.endpoint.name if exc.endpoint else "",
    )


_checked = threading.local()


def connections_checked() -> None:
    """Django's per-request connection upkeep (drop a broken or too old connection), at
    most once a second per thread: each time costs the next query a health check."""
    now = time.monotonic()
    if now - getattr(_checked, "at", 0.0) >= 1.0:
        _checked.at = now
        close_old_connections()


# --- the one write --------------------------------------------------------------------


def _columns(model: type[models.Model]) -> list[models.Field[Any, Any]]:
    # Every stored column but a database-generated key, from the model itself: a field
    # added later is written here too.
    return [
        f
        for f in model._meta.concrete_fields
        if not (f.primary_key and isinstance(f, models.AutoField | models.BigAutoField))
    ]


@cache
def _insert(model: type[models.Model], name: str) -> tuple[str, list[models.Field[Any, Any]]]:
    """`name AS (INSERT …)` of one row passed as a single JSON parameter: the statement
    keeps few parameters whatever the models grow, so psycopg caches its conversion."""
    fields = _columns(model)
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    columns = ", ".join(quote(f.column) for f in fields)
    values = ", ".join(
        "(SELECT id FROM pool_inferenceendpoint WHERE name = %s)"
        if f.attname == "endpoint_id"
        else f"r.{quote(f.column)}"
        for f in fields
    )
    # Identifiers come from the models, quoted; every value is a parameter.
    sql = (
        f"{name} AS (INSERT INTO {table} ({columns}) SELECT {values}"  # noqa: S608
        f" FROM jsonb_populate_record(NULL::{table}, %s::jsonb) r)"
    )
    return sql, fields


@cache
def _statement(with_reply: bool) -> str:
    conversation = connection.ops.quote_name(Conversation._meta.db_table)
    parts = [
        f"touched AS (UPDATE {conversation} SET last_message_at = %s WHERE id = %s)",  # noqa: S608
        _insert(Message, "turn")[0],
    ]
    if with_reply:
        parts.append(_insert(Message, "reply")[0])
    usage_sql, _ = _insert(UsageRecord, "usage")
    # The last data-modifying statement is the main one; the CTEs run with it, in one
    # transaction of their own.
    main = usage_sql.split(" AS (", 1)[1][:-1]
    return "WITH " + ", ".join(parts) + " " + main


def _params(instance: models.Model) -> list[Any]:
    row: dict[str, Any] = {}
    endpoint: list[Any] = []
    for f in _insert(type(instance), "x")[1]:
        value = getattr(instance, f.attname)
        if f.attname == "endpoint_id":
            endpoint.append(value)  # a name: the subquery finds its id
        else:
            row[f.column] = value
    return [*endpoint, json.dumps(row, cls=DjangoJSONEncoder)]


class _Bookkeeping:
    """Redis counters of finished calls (metrics, the token quota), summed and written
    every `every_s` by one thread: one pipeline for many calls instead of several round
    trips each. Best effort, like every Redis counter: PostgreSQL's ledger is the record,
    and the quota counter is rebuilt from it when Redis loses it."""

    def __init__(self, every_s: float = 0.1) -> None:
        self.every_s = every_s
        self._lock = threading.Lock()
        self._increments: dict[tuple[str, str], float] = {}
        self._tokens: dict[Any, tuple[int, datetime]] = {}
        self._wake = threading.Event()
        threading.Thread(target=self._run, name="api-bookkeeping", daemon=True).start()

    def add(
        self, *, tenant_id: Any, tokens: int, at: datetime, increments: list[tuple[str, str, float]]
    ) -> None:
        with self._lock:
            for family, name, amount in increments:
                self._increments[(family, name)] = self._increments.get((family, name), 0) + amount
            if tokens:
                total, _ = self._tokens.get(tenant_id, (0, at))
                self._tokens[tenant_id] = (total + tokens, at)

    def flush(self) -> None:
        with self._lock:
            increments, self._increments = self._increments, {}
            tokens, self._tokens = self._tokens, {}
        if increments:
            counters.increment_many(
                (family, name, amount) for (family, name), amount in increments.items()
            )
        for tenant_id, (total, at) in tokens.items():
            admission.tokens_used(tenant_id=tenant_id, tokens=total, at=at)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.every_s)
            try:
                self.flush()
            except Exception:
                logger.warning("API bookkeeping: could not write counters", exc_info=True)


@cache
def _bookkeeping() -> _Bookkeeping:
    return _Bookkeeping()


def bookkeeping_flush() -> None:
    """Write what is pending now (tests; a process about to exit)."""
    _bookkeeping().flush()


def completion_record(
    started: Started,
    result: ChatResult | None,
    *,
    outcome: str,
    error: str = "",
    endpoint: str = "",
    completion_tokens: int = 0,
) -> Message | None:
    """Store the call: the turn, the reply and the usage record in one statement."""
    inbound = started.inbound
    now = timezone.now()
    reply: Message | None = None
    if result is not None:
        endpoint = result.endpoint.name
        timings: dict[str, Any] = {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "ttft_ms": result.ttft_ms,
            "latency_ms": result.latency_ms,
        }
        for name, value in timings.items():
            setattr(inbound, name, value)
        inbound.status = Message.Status.REPLIED
        inbound.endpoint_id = endpoint  # type: ignore[assignment]  # a name, see _params
        reply = Message(
            id=uuid.uuid4(),
            tenant_id=inbound.tenant_id,
            conversation_id=inbound.conversation_id,
            connector_id=inbound.connector_id,
            direction=Message.Direction.OUTBOUND,
            text=result.text,
            # Handed to the caller in this very response: nothing left to deliver.
            status=Message.Status.DELIVERED,
            delivered_at=now,
            reply_to_id=inbound.pk,
            finish_reason=result.finish_reason,
            endpoint_id=endpoint,  # type: ignore[misc]
            created_at=now,
            **timings,
        )
        prompt, completion = result.prompt_tokens, result.completion_tokens
        ttft, latency = result.ttft_ms, result.latency_ms
    else:
        inbound.status = Message.Status.FAILED
        inbound.error = error[:2000]
        inbound.endpoint_id = None
        prompt, completion, ttft, latency = 0, completion_tokens, None, None
    usage = UsageRecord(
        tenant_id=inbound.tenant_id,
        bot_id=started.bot.pk,
        connector_id=inbound.connector_id,
        end_user_id=started.end_user_id,
        message_id=inbound.pk,
        endpoint=endpoint,
        model_name=started.bot.model_name,
        prompt_tokens=prompt,
        completion_tokens=completion,
        ttft_ms=ttft,
        latency_ms=latency,
        outcome=outcome,
        created_at=now,
    )
    sql = _statement(reply is not None)
    params: list[Any] = [now, inbound.conversation_id, *_params(inbound)]
    if reply is not None:
        params += _params(reply)
    params += _params(usage)
    connection.ensure_connection()
    try:
        # Server-side binding, prepared once per connection (psycopg does it after a few
        # runs): this statement runs on every call, and converting its parameters into
        # SQL text on the client cost more CPU than the rest of the write.
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(sql, params)
    except psycopg.IntegrityError as exc:
        # The conversation was pruned since this process looked it up: the next call
        # finds (or makes) it again.
        _conversations.clear()
        raise IntegrityError(str(exc)) from exc
    # Committed (one statement, autocommit). What a stored message and ledger row set off
    # elsewhere through model signals (metrics) and on-commit hooks (the quota counter)
    # is Redis bookkeeping: done off the caller's path, many calls at a time.
    _bookkeeping().add(
        tenant_id=inbound.tenant_id,
        tokens=prompt + completion,
        at=now,
        # Counted as stored when the call began (accepted), as for the queued channels.
        increments=counters.stored_increments(
            SimpleNamespace(
                tenant_id=inbound.tenant_id,
                connector_id=inbound.connector_id,
                status=Message.Status.PROCESSING,
            ),
            usage,
        ),
    )
    # Stored now; the endpoint's id was looked up by the statement, not here.
    inbound.endpoint_id = None
    inbound._state.adding = False
    if reply is not None:
        reply.endpoint_id = None
        reply._state.adding = False
    return reply
