"""The OpenAI-compatible endpoint: `/v1/chat/completions` and `/v1/models`.

A small Starlette app in front of Django (see `switchboard.asgi`): this path is a proxy
whose whole budget is a few milliseconds, and Django's middleware stack (sessions, CSRF,
locale, two-factor, audit) is for the console, not for Bearer-token machine calls.

A call is three steps. What needs the database runs in a thread (`api_executor`):
authentication, validation and admission before the model call (`_begin`), the ledger
write after the answer has gone out (`completions.record_soon`). The model call itself
runs on the event loop (`Pool.arun`, aiohttp), so a completion that streams for a minute
holds no thread, and a client that hangs up cancels it at once.

Authentication is the tenant's API key (scope `chat`) as a Bearer token. `model` names
one of the tenant's bots, or a model the pool serves (answered by a bot of that name,
made on first use with no system prompt). `user` is the end user counted in MAU; without
it the API key itself is the end user.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_guid import get_guid, set_guid
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from inference import (
    ChatResult,
    ContextTooLong,
    InferenceError,
    InferenceTimeout,
    RequestRejected,
)
from switchboard.api.completions import (
    REFUSAL_MESSAGES,
    CompletionRequest,
    Recent,
    Started,
    api_executor,
    completion_start,
    completion_stream,
    connections_checked,
    record_failure_soon,
    record_soon,
)
from switchboard.apikeys.models import ApiKey, Scope
from switchboard.apikeys.services import api_key_authenticate
from switchboard.bots.models import Bot
from switchboard.conversations.services import Refused
from switchboard.licensing import replies
from switchboard.metering.models import UsageRecord
from switchboard.pool.models import InferenceEndpoint
from switchboard.pool.runtime import worker_pool

logger = logging.getLogger(__name__)
Outcome = UsageRecord.Outcome

# --- request --------------------------------------------------------------------------


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionBody(BaseModel):
    # Unknown fields are ignored, as most OpenAI-compatible servers do: SDKs and
    # frameworks send parameters (logprobs, penalties) that do not change the answer's
    # shape.
    model_config = ConfigDict(extra="ignore")
    model: Annotated[str, Field(min_length=1, max_length=200)]
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=500)]
    stream: bool = False
    max_tokens: Annotated[int | None, Field(ge=1, le=32768)] = None
    max_completion_tokens: Annotated[int | None, Field(ge=1, le=32768)] = None
    temperature: Annotated[float | None, Field(ge=0.0, le=2.0)] = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: int | None = None
    n: Annotated[int, Field(ge=1, le=1)] = 1
    user: Annotated[str | None, Field(max_length=200)] = None
    stream_options: dict[str, Any] | None = None


# --- errors ---------------------------------------------------------------------------


@dataclass
class ApiError(Exception):
    """An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""

    status: int
    code: str
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    retry_after_s: float | None = None

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        headers = {}
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(max(1, round(self.retry_after_s)))
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


# OpenAI's own status and code for each refusal; the words are the tenant API's.
_REFUSALS: dict[str, tuple[int, str]] = {
    replies.RATE_LIMITED: (429, "rate_limit_exceeded"),
    replies.QUOTA_EXHAUSTED: (429, "insufficient_quota"),
    replies.MAU_LIMIT: (403, "mau_limit_reached"),
    replies.CONNECTOR_NOT_LICENSED: (403, "channel_not_licensed"),
}


def _refused(exc: Refused) -> ApiError:
    status, code = _REFUSALS.get(exc.reason, (403, exc.reason))
    message = REFUSAL_MESSAGES.get(exc.reason, f"Refused by admission: {exc.reason}.")
    kind = "rate_limit_error" if status == 429 else "permission_error"
    return ApiError(status, code, message, type=kind, retry_after_s=exc.retry_after_s)


def _inference_error(exc: InferenceError) -> ApiError:
    if isinstance(exc, ContextTooLong):
        return ApiError(400, "context_length_exceeded", exc.message, param="messages")
    if isinstance(exc, RequestRejected):
        return ApiError(400, "invalid_request", exc.message)
    if isinstance(exc, InferenceTimeout):
        return ApiError(504, "timeout", exc.message, type="server_error")
    return ApiError(
        503,
        "model_unavailable",
        f"No model server could answer: {exc.message}",
        type="server_error",
    )


# --- the work, in a thread ------------------------------------------------------------


# Keys and bots seen recently, per process: a returning caller costs no database round
# trip before the pool is asked. A revoked key or a changed bot is noticed within
# SWITCHBOARD_API_KEY_CACHE_S; an expiry is checked on every request.
_keys = Recent(ttl_s=settings.SWITCHBOARD_API_KEY_CACHE_S)
_bots = Recent(ttl_s=settings.SWITCHBOARD_API_KEY_CACHE_S)


def caches_clear() -> None:
    _keys.clear()
    _bots.clear()


_INVALID_KEY = (401, "invalid_api_key", "The API key is unknown, revoked or expired.")


def _authenticate(header: str) -> ApiKey:
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401,
            "missing_api_key",
            "Send the tenant's API key as `Authorization: Bearer sb_…`.",
            type="authentication_error",
        )
    digest = hashlib.sha256(token.encode()).hexdigest()
    key: ApiKey | None = _keys.get(digest)
    if key is None:
        key = api_key_authenticate(token)
        if key is None:
            raise ApiError(*_INVALID_KEY, type="authentication_error")
        _keys.put(digest, key)
    elif key.expires_at is not None and key.expires_at <= timezone.now():
        _keys.drop(digest)
        raise ApiError(*_INVALID_KEY, type="authentication_error")
    if not key.has_scope(Scope.CHAT):
        raise ApiError(
            403,
            "insufficient_scope",
            "This API key lacks the `chat` scope needed for completions.",
            type="permission_error",
        )
    return key


def _served_models() -> set[str]:
    return set(InferenceEndpoint.objects.filter(enabled=True).values_list("model", flat=True))


def _bot_for(key: ApiKey, model: str) -> Bot:
    cached: Bot | None = _bots.get((key.tenant_id, model))
    if cached is not None:
        return _active(cached, model)
    bots = Bot.objects.for_tenant(key.tenant_id).select_related("tenant")
    bot = bots.filter(name=model).first()
    if bot is None and model in _served_models():
        with transaction.atomic():
            # A passthrough bot: the caller's messages are the whole prompt. Made without
            # the licence's bot count: it is the API, not a bot the tenant designed.
            bot, _ = Bot.objects.get_or_create(
                tenant_id=key.tenant_id,
                name=model,
                defaults={"model_name": model, "system_prompt": "", "max_tokens": 4096},
            )
            bot = bots.get(pk=bot.pk)
    if bot is None:
        raise ApiError(
            404,
            "model_not_found",
            f"The model {model!r} does not exist: name one of this tenant's bots "
            "(GET /v1/models) or a model the GPU pool serves.",
            param="model",
        )
    _bots.put((key.tenant_id, model), bot)
    return _active(bot, model)


def _active(bot: Bot, model: str) -> Bot:
    if not bot.is_active:
        raise ApiError(403, "model_disabled", f"The bot {model!r} is disabled.", param="model")
    return bot


def _conversation_key(user: str, messages: list[ChatMessage]) -> str:
    # The API is stateless: a conversation is recognised by its opening (the first
    # system and user turns), so every later turn of one chat lands in one thread and
    # the router's session affinity finds the same KV cache.
    opening: list[str] = []
    for message in messages:
        opening.append(f"{message.role}\x00{message.text()}")
        if message.role == "user":
            break
    digest = hashlib.sha256("\x1e".join([user, *opening]).encode()).hexdigest()
    return f"openai:{digest[:40]}"


def _prepare(body: ChatCompletionBody, key: ApiKey) -> CompletionRequest:
    bot = _bot_for(key, body.model)
    users = [m for m in body.messages if m.role == "user"]
    if not users:
        raise ApiError(400, "invalid_messages", "messages must hold a user turn.", param="messages")
    user = body.user or f"key:{key.prefix}"
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    return CompletionRequest(
        bot=bot,
        user_id=user,
        conversation_key=_conversation_key(user, body.messages),
        text=users[-1].text(),
        messages=[
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in body.messages
        ],
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        stop=stop,
        seed=body.seed,
    )


def _begin(header: str, raw: bytes, request_id: str) -> tuple[dict[str, Any], Started]:
    """Everything before the model call, in a thread (it may need the database):
    authentication, validation, the bot, admission. Raises `ApiError`."""
    # Executor threads do not inherit the event loop's context: the id is set here so
    # this thread's log lines carry it.
    set_guid(request_id)
    connections_checked()
    key = _authenticate(header)
    try:
        body = ChatCompletionBody.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ApiError(
            400,
            "invalid_request",
            f"{where}: {first['msg']}" if where else first["msg"],
            param=where or None,
        ) from None
    request = _prepare(body, key)
    try:
        started = completion_start(request)
    except Refused as exc:
        raise _refused(exc) from None
    # Loads the pool's endpoint list here if it is due: the async call below reads it
    # from the event loop, where no query may run.
    worker_pool().endpoints()
    meta = {
        "id": f"chatcmpl-{started.inbound.pk.hex}",
        "created": int(time.time()),
        "model": body.model,
        "stream": body.stream,
        "usage": bool((body.stream_options or {}).get("include_usage")),
    }
    return meta, started


_INTERNAL = ApiError(
    500, "internal_error", "Something went wrong on our side; it is logged.", type="server_error"
)


def _completion(meta: dict[str, Any], reply: ChatResult) -> dict[str, Any]:
    prompt, completion = reply.prompt_tokens or 0, reply.completion_tokens or 0
    return {
        "id": meta["id"],
        "object": "chat.completion",
        "created": meta["created"],
        "model": meta["model"],
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.text, "refusal": None},
                "logprobs": None,
                "finish_reason": reply.finish_reason or "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def _chunk_body(meta: dict[str, Any], delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": meta["id"],
        "object": "chat.completion.chunk",
        "created": meta["created"],
        "model": meta["model"],
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def _chunk(meta: dict[str, Any], delta: dict[str, Any], finish: str | None) -> str:
    return json.dumps(_chunk_body(meta, delta, finish), ensure_ascii=False)


# --- HTTP -----------------------------------------------------------------------------


async def _body(request: Request) -> bytes:
    limit = settings.SWITCHBOARD_API_MAX_BODY_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "request_too_large", f"The request body exceeds {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "request_too_large", f"The request body exceeds {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


async def chat_completions(request: Request) -> Response:
    try:
        raw = await _body(request)
    except ApiError as exc:
        return exc.response()
    except ClientDisconnect:
        return Response(status_code=400)
    loop = asyncio.get_running_loop()
    header = request.headers.get("authorization", "")
    try:
        meta, started = await loop.run_in_executor(
            api_executor(), _begin, header, raw, get_guid() or ""
        )
    except ApiError as exc:
        return exc.response()
    except Exception:
        logger.exception("chat completion failed")
        return _INTERNAL.response()
    if meta["stream"]:
        return EventSourceResponse(_events(meta, started), ping=15, sep="\n")
    try:
        result = await worker_pool().achat(started.chat, started.route, stream=False)
    except InferenceError as exc:
        record_failure_soon(started, exc)
        return _inference_error(exc).response()
    except BaseException:
        # Cancelled (the server is stopping) or a bug: the call is still on the ledger.
        record_soon(started, None, error="the call was abandoned", outcome=Outcome.ERROR)
        raise

    async def record() -> None:
        record_soon(started, result, outcome=Outcome.OK)

    # Stored once the answer is sent.
    return JSONResponse(_completion(meta, result), background=BackgroundTask(record))


async def _events(meta: dict[str, Any], started: Started) -> AsyncIterator[dict[str, str]]:
    result: ChatResult | None = None
    try:
        yield {"data": _chunk(meta, {"role": "assistant", "content": ""}, None)}
        async for item in completion_stream(started):
            if isinstance(item, str):
                yield {"data": _chunk(meta, {"content": item}, None)}
            else:
                result = item
    except InferenceError as exc:
        # The stream had started: the status is sent, so the error rides in-band, as
        # OpenAI's own API does.
        yield {"data": json.dumps(_inference_error(exc).body())}
        return
    except Exception:
        logger.exception("chat completion failed")
        yield {"data": json.dumps(_INTERNAL.body())}
        return
    assert result is not None  # completion_stream ends with the result or raises
    yield {"data": _chunk(meta, {}, result.finish_reason or "stop")}
    if meta["usage"]:
        usage = _completion(meta, result)["usage"]
        final = {**_chunk_body(meta, {}, None), "choices": [], "usage": usage}
        yield {"data": json.dumps(final)}
    yield {"data": "[DONE]"}
    record_soon(started, result, outcome=Outcome.OK)


async def list_models(request: Request) -> Response:
    loop = asyncio.get_running_loop()
    try:
        data = await loop.run_in_executor(
            api_executor(), _models, request.headers.get("authorization", "")
        )
    except ApiError as exc:
        return exc.response()
    return JSONResponse({"object": "list", "data": data})


def _models(header: str) -> list[dict[str, Any]]:
    connections_checked()
    key = _authenticate(header)
    owner = key.tenant.slug
    bots = Bot.objects.for_tenant(key.tenant_id).filter(is_active=True)
    seen: dict[str, dict[str, Any]] = {}
    for name, created in bots.values_list("name", "created_at"):
        seen[name] = {
            "id": name,
            "object": "model",
            "created": int(created.timestamp()),
            "owned_by": owner,
        }
    for model in sorted(_served_models()):
        seen.setdefault(
            model, {"id": model, "object": "model", "created": 0, "owned_by": "switchboard"}
        )
    return list(seen.values())


async def not_found(request: Request, exc: Exception) -> Response:
    return ApiError(404, "not_found", f"No such endpoint: {request.url.path}").response()


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    return ApiError(405, "method_not_allowed", f"{request.method} is not allowed here.").response()


_starlette = Starlette(
    routes=[
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
    ],
    exception_handlers={404: not_found, 405: method_not_allowed},
)

access_logger = logging.getLogger("switchboard.access")


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's X-Request-ID if it is a UUID (as django-guid takes it on Django's
    side), else a new one."""
    for name, value in headers:
        if name.lower() == b"x-request-id":
            try:
                text = value.decode("latin-1")
                uuid.UUID(text)
            except ValueError:
                break
            return text
    return uuid.uuid4().hex


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The endpoint with what Django's middleware gives every other path: a request id
    (set for the log lines, returned in X-Request-ID) and an access-log line."""
    if scope["type"] != "http":
        await _starlette(scope, receive, send)
        return
    request_id = _request_id(scope.get("headers", []))
    set_guid(request_id)
    started = time.perf_counter()
    finished: float | None = None
    status = 500

    async def send_with_id(message: dict[str, Any]) -> None:
        nonlocal status, finished
        if message["type"] == "http.response.start":
            status = message["status"]
            message["headers"] = [
                *message.get("headers", []),
                (b"x-request-id", request_id.encode()),
            ]
        await send(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            # The response time the client saw: work after the answer (the ledger
            # write's hand-off) is not in it.
            finished = time.perf_counter()

    try:
        await _starlette(scope, receive, send_with_id)
    finally:
        if settings.SWITCHBOARD_ACCESS_LOG and access_logger.isEnabledFor(logging.INFO):
            duration_ms = ((finished or time.perf_counter()) - started) * 1000.0
            access_logger.info(
                '"%s %s" %d %.1fms',
                scope["method"],
                scope["path"],
                status,
                duration_ms,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(duration_ms, 3),
                    "client": (scope.get("client") or ("", 0))[0],
                },
            )
