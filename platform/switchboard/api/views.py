"""The tenant REST API (`/api/v1/`). Every queryset starts from the caller's tenant
(`TenantScoped`), so another tenant's id is simply not found."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone
from django_filters import rest_framework as filters
from django_filters.fields import IsoDateTimeField
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from sse_starlette import ServerSentEvent

from connectors.base import InboundMessage
from connectors.webhook import generate_secret
from inference import ChatResult, InferenceError
from switchboard.api import serializers as s
from switchboard.api.completions import (
    API_CHANNEL,
    REFUSAL_MESSAGES,
    CompletionRequest,
    Started,
    api_connector,
    api_executor,
    completion_record,
    completion_start,
    completion_stream,
    connections_checked,
)
from switchboard.apikeys.models import ApiKey, Scope
from switchboard.apikeys.services import api_key_create, api_key_revoke
from switchboard.bots.models import Bot, Connector
from switchboard.bots.services import connector_rotate_secret
from switchboard.conversations import delivery
from switchboard.conversations.models import Conversation, Message
from switchboard.conversations.services import Refused, message_receive, reply_ready_key
from switchboard.licensing import replies
from switchboard.licensing.services import effective_limits
from switchboard.metering import export, selectors
from switchboard.metering.models import UsageRecord
from switchboard.pool.runtime import worker_pool

ERRORS = {
    400: OpenApiResponse(s.ErrorSerializer, description="Invalid input"),
    401: OpenApiResponse(s.ErrorSerializer, description="No or bad API key"),
    403: OpenApiResponse(s.ErrorSerializer, description="Missing scope"),
    404: OpenApiResponse(s.ErrorSerializer, description="Not found (or another tenant's)"),
    429: OpenApiResponse(s.ErrorSerializer, description="Rate limited; see Retry-After"),
}

logger = logging.getLogger(__name__)


def _tenant_id(request: Request) -> uuid.UUID:
    key: ApiKey = request.auth  # type: ignore[assignment]
    return key.tenant_id  # type: ignore[return-value]


class TenantScoped:
    request: Request
    model: Any = None

    def get_queryset(self) -> QuerySet[Any]:
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request
            return self.model.objects.none()  # type: ignore[no-any-return]
        return self.scoped(self.model.objects.for_tenant(_tenant_id(self.request)))

    def scoped(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset

    def get_serializer_context(self) -> dict[str, Any]:
        context = super().get_serializer_context()  # type: ignore[misc]
        if isinstance(self.request.auth, ApiKey):
            context["tenant_id"] = _tenant_id(self.request)
        return context  # type: ignore[no-any-return]


class UtcDateTimeField(IsoDateTimeField):
    """An ISO 8601 date-time, in UTC: PostgreSQL refuses UTC offsets beyond ±15:59,
    which ISO 8601 allows, and UTC cannot hold the first hours of the year 1."""

    def to_python(self, value: Any) -> datetime | None:
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid") from None


class UtcDateTimeFilter(filters.IsoDateTimeFilter):
    field_class = UtcDateTimeField


class TimeRangeFilter(filters.FilterSet):
    since = UtcDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = UtcDateTimeFilter(field_name="created_at", lookup_expr="lt")


# --- bots -------------------------------------------------------------------------------


class BotFilter(filters.FilterSet):
    is_active = filters.BooleanFilter()
    name = filters.CharFilter(lookup_expr="icontains")


@extend_schema(responses={200: s.BotSerializer, **ERRORS})
@extend_schema_view(
    create=extend_schema(responses={201: s.BotSerializer, **ERRORS}),
    destroy=extend_schema(responses={204: None, **ERRORS}),
)
class BotViewSet(TenantScoped, viewsets.ModelViewSet):  # type: ignore[type-arg]
    model = Bot
    serializer_class = s.BotSerializer
    filterset_class = BotFilter
    action_scopes = {"send": Scope.CHAT}
    http_method_names = ["get", "post", "patch", "put", "delete"]

    @extend_schema(
        request=s.SendMessageSerializer,
        responses={
            (200, "application/json"): OpenApiResponse(
                s.SendResultSerializer,
                description="sync: the reply. stream: `text/event-stream` of `message`, "
                "`delta` and `done` (or `error`) events.",
            ),
            (200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR),
            202: OpenApiResponse(
                s.SendResultSerializer,
                description="async, or sync past its timeout: accepted; the reply is "
                "POSTed to callback_url and readable at /api/v1/messages/{id}/.",
            ),
            **ERRORS,
        },
        summary="Send a message to the bot",
    )
    @action(detail=True, methods=["post"], url_path="messages")
    def send(self, request: Request, pk: str | None = None) -> Any:
        bot = self.get_object()
        form = s.SendMessageSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        if not bot.is_active:
            raise exceptions.PermissionDenied("This bot is disabled.", code="bot_disabled")
        bot = Bot.objects.select_related("tenant").get(pk=bot.pk)
        conversation = data["conversation"] or f"user:{data['user']}"
        if data["mode"] == "stream":
            return _send_stream(bot, data, conversation)
        return _send_queued(bot, data, conversation)

    @extend_schema(request=None, responses={200: s.SecretSerializer, **ERRORS})
    @action(detail=True, methods=["post"], url_path="callback-secret")
    def callback_secret(self, request: Request, pk: str | None = None) -> Response:
        """A new secret for the signatures on this bot's API callbacks (shown once)."""
        bot = self.get_object()
        connector = Connector.objects.get(pk=api_connector(bot).pk)
        connector.secret = generate_secret()
        connector.save(update_fields=["secret"])
        return Response({"secret": connector.secret})


def _refusal(exc: Refused) -> exceptions.APIException:
    message = REFUSAL_MESSAGES.get(exc.reason, f"Refused by admission: {exc.reason}.")
    if exc.reason in (replies.RATE_LIMITED, replies.QUOTA_EXHAUSTED):
        error = exceptions.Throttled(wait=exc.retry_after_s or 60.0, detail=message)
        error.detail = exceptions.ErrorDetail(message, code=exc.reason)
        return error
    return exceptions.PermissionDenied(message, code=exc.reason)


def _send_queued(bot: Bot, data: dict[str, Any], conversation: str) -> Response:
    """async and sync: stored, then answered by a worker like every queued channel."""
    handle: dict[str, Any] = {"conversation_id": conversation}
    if data["callback_url"]:
        handle["callback_url"] = data["callback_url"]
    try:
        received = message_receive(
            connector=api_connector(bot),
            inbound=InboundMessage(
                channel=API_CHANNEL,
                provider_message_id=data["message_id"] or f"api-{uuid.uuid4().hex}",
                user_id=data["user"],
                user_name=data["user_name"],
                conversation_key=conversation,
                text=data["text"],
                reply_handle=handle,
            ),
        )
    except Refused as exc:
        raise _refusal(exc) from None
    message = received.message
    reply = _reply_of(message)
    if reply is None and data["mode"] == "sync":
        timeout = min(data["timeout"], settings.SWITCHBOARD_API_SYNC_TIMEOUT_MAX_S)
        # The worker pushes the reply's id here when it is stored (see
        # conversations.services._after_reply); one blocking pop, no polling.
        delivery.redis_client().blpop([reply_ready_key(message.pk)], timeout=timeout)
        reply = _reply_of(message)
    message.refresh_from_db()
    body = {
        "message": s.MessageSerializer(message).data,
        "reply": s.MessageSerializer(reply).data if reply else None,
    }
    done = reply is not None and data["mode"] == "sync"
    return Response(body, status=status.HTTP_200_OK if done else status.HTTP_202_ACCEPTED)


def _reply_of(message: Message) -> Message | None:
    return Message.objects.for_tenant(message.tenant_id).filter(reply_to=message).first()


def _send_stream(bot: Bot, data: dict[str, Any], conversation: str) -> StreamingHttpResponse:
    """stream: the reply's text as Server-Sent Events while the pool writes it."""
    try:
        started = completion_start(
            CompletionRequest(
                bot=bot,
                user_id=data["user"],
                user_name=data["user_name"],
                conversation_key=conversation,
                text=data["text"],
                reply_handle={"conversation_id": conversation},
            )
        )
    except Refused as exc:
        raise _refusal(exc) from None
    # Serialised here: the stream runs in the event loop, where the ORM may not. For the
    # same reason the pool's endpoint list is read (and loaded when due) here.
    first = dict(s.MessageSerializer(started.inbound).data)
    worker_pool().endpoints()
    response = StreamingHttpResponse(_sse(started, first), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    # Tells nginx-style proxies not to buffer the stream.
    response["X-Accel-Buffering"] = "no"
    return response


def _event(name: str, data: Any) -> bytes:
    return ServerSentEvent(data=json.dumps(data, default=str), event=name).encode()


def _stored_reply(started: Started, result: ChatResult) -> dict[str, Any]:
    connections_checked()
    reply = completion_record(started, result, outcome=UsageRecord.Outcome.OK)
    return dict(s.MessageSerializer(reply).data)


async def _sse(started: Started, first: dict[str, Any]) -> AsyncIterator[bytes]:
    """The model call runs on the event loop (`completion_stream`): a stream holds no
    thread. `done` carries the stored reply, so it waits for the write."""
    yield _event("message", first)
    try:
        async for item in completion_stream(started):
            if isinstance(item, str):
                yield _event("delta", {"text": item})
            else:
                loop = asyncio.get_running_loop()
                stored = await loop.run_in_executor(api_executor(), _stored_reply, started, item)
                yield _event("done", stored)
    except InferenceError as exc:
        yield _event("error", {"code": "inference_failed", "message": exc.message})
    except Exception as exc:  # reported in-band: the 200 is already sent
        logger.exception("streamed send failed")
        yield _event("error", {"code": "internal_error", "message": str(exc)[:500]})


# --- connectors ---------------------------------------------------------------------------


class ConnectorFilter(filters.FilterSet):
    bot = filters.UUIDFilter(field_name="bot_id")
    kind = filters.ChoiceFilter(choices=[(k.value, k.label) for k in s.MANAGED_KINDS])
    enabled = filters.BooleanFilter()


@extend_schema(responses={200: s.ConnectorSerializer, **ERRORS})
@extend_schema_view(
    create=extend_schema(responses={201: s.ConnectorSerializer, **ERRORS}),
    destroy=extend_schema(responses={204: None, **ERRORS}),
)
class ConnectorViewSet(TenantScoped, viewsets.ModelViewSet):  # type: ignore[type-arg]
    model = Connector
    serializer_class = s.ConnectorSerializer
    filterset_class = ConnectorFilter
    http_method_names = ["get", "post", "patch", "put", "delete"]

    def scoped(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(kind__in=s.MANAGED_KINDS)

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        connector = serializer.save()
        body = s.ConnectorSerializer(
            connector, context={**self.get_serializer_context(), "reveal": True}
        ).data
        if connector.kind == Connector.Kind.WEBHOOK:
            body["secret"] = connector.secret  # this once
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: s.SecretSerializer, **ERRORS})
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request: Request, pk: str | None = None) -> Response:
        """A new webhook signing secret, or a new AliGenie URL token (shown once)."""
        connector = self.get_object()
        try:
            secret = connector_rotate_secret(connector=connector)
        except ValueError as exc:
            raise exceptions.ValidationError({"kind": [str(exc)]}) from None
        return Response({"secret": secret})


# --- conversations and messages -------------------------------------------------------------


class ConversationFilter(TimeRangeFilter):
    bot = filters.UUIDFilter(field_name="bot_id")
    connector = filters.UUIDFilter(field_name="connector_id")
    user = filters.CharFilter(field_name="end_user__external_id")
    channel = filters.CharFilter(field_name="end_user__channel")


@extend_schema(responses={200: s.ConversationSerializer, **ERRORS})
class ConversationViewSet(TenantScoped, viewsets.ReadOnlyModelViewSet):  # type: ignore[type-arg]
    model = Conversation
    serializer_class = s.ConversationSerializer
    filterset_class = ConversationFilter

    def scoped(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.select_related("end_user", "connector")

    @extend_schema(responses={200: s.MessageSerializer(many=True), **ERRORS})
    @action(detail=True, methods=["get"], filterset_class=None)
    def messages(self, request: Request, pk: str | None = None) -> Response:
        conversation = self.get_object()
        rows = (
            Message.objects.for_tenant(conversation.tenant_id)
            .filter(conversation=conversation)
            .select_related("reply")
        )
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(s.MessageSerializer(page, many=True).data)


class MessageFilter(TimeRangeFilter):
    conversation = filters.NumberFilter(field_name="conversation_id")
    bot = filters.UUIDFilter(field_name="conversation__bot_id")
    direction = filters.ChoiceFilter(choices=Message.Direction.choices)
    status = filters.ChoiceFilter(choices=Message.Status.choices)


@extend_schema(responses={200: s.MessageSerializer, **ERRORS})
class MessageViewSet(TenantScoped, viewsets.ReadOnlyModelViewSet):  # type: ignore[type-arg]
    model = Message
    serializer_class = s.MessageSerializer
    filterset_class = MessageFilter

    def scoped(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.select_related("reply")


# --- API keys ---------------------------------------------------------------------------


@extend_schema(responses={200: s.ApiKeySerializer, **ERRORS})
class ApiKeyViewSet(
    TenantScoped,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,  # type: ignore[type-arg]
):
    """Keys of the tenant. Creating and revoking need `write`; a key can only make keys
    with scopes it has itself. DELETE revokes (the row stays for the audit trail)."""

    model = ApiKey
    serializer_class = s.ApiKeySerializer

    @extend_schema(responses={201: s.ApiKeyCreatedSerializer, **ERRORS})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        caller: ApiKey = request.auth  # type: ignore[assignment]
        wanted = serializer.validated_data["scopes"]
        beyond = sorted(set(wanted) - set(caller.scopes))
        if beyond:
            raise exceptions.PermissionDenied(
                f"A key cannot grant scopes it lacks: {', '.join(beyond)}.",
                code="insufficient_scope",
            )
        try:
            key, plaintext = api_key_create(
                tenant=caller.tenant,
                name=serializer.validated_data["name"],
                scopes=wanted,
                expires_at=serializer.validated_data.get("expires_at"),
            )
        except ValueError as exc:
            raise exceptions.ValidationError({"non_field_errors": [str(exc)]}) from None
        body = s.ApiKeyCreatedSerializer(key).data
        body["key"] = plaintext
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None, **ERRORS})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        api_key_revoke(key=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- usage, MAU, licence --------------------------------------------------------------


def _parse_when(value: str | None, default: datetime, name: str) -> datetime:
    if not value:
        return default
    try:
        parsed = datetime.fromisoformat(value)
        parsed = parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=UTC)
        # In UTC, as the database compares it; also refuses what UTC cannot hold
        # (0001-01-01T00:00+01:00 is in the year 0).
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise exceptions.ValidationError(
            {name: ["An ISO 8601 date or date-time, e.g. 2026-11-01 or 2026-11-01T00:00Z."]}
        ) from None


class UsageView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("group_by", enum=["day", "hour", "bot", "tenant"], default="day"),
            OpenApiParameter("start", OpenApiTypes.DATETIME, description="Default: 30 days ago."),
            OpenApiParameter("end", OpenApiTypes.DATETIME, description="Default: now."),
            OpenApiParameter("bot", OpenApiTypes.UUID, description="day/hour: one bot only."),
            OpenApiParameter(
                "output",
                enum=["json", "csv"],
                default="json",
                description="csv: hour/day rollups per bot (group_by day or hour) as a file.",
            ),
        ],
        responses={
            (200, "application/json"): s.UsageSerializer,
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="output=csv"),
            **ERRORS,
        },
    )
    def get(self, request: Request) -> Any:
        """Tokens, requests and latency from the usage rollups (a minute or so behind)."""
        tenant_id = _tenant_id(request)
        now = timezone.now()
        end = _parse_when(request.query_params.get("end"), now, "end")
        if end - datetime.min.replace(tzinfo=UTC) < timedelta(days=30):
            raise exceptions.ValidationError(
                {"end": ["Too early; the default start is 30 days before."]}
            )
        start = _parse_when(request.query_params.get("start"), end - timedelta(days=30), "start")
        if end < start:
            raise exceptions.ValidationError({"end": ["end must not be before start."]})
        if end - start > timedelta(days=400):
            raise exceptions.ValidationError({"start": ["At most 400 days at once."]})
        group_by = request.query_params.get("group_by", "day")
        if group_by not in ("day", "hour", "bot", "tenant"):
            raise exceptions.ValidationError({"group_by": ["One of day, hour, bot, tenant."]})
        # Not `format`: DRF reserves that for picking a renderer.
        fmt = request.query_params.get("output", "json")
        if fmt not in ("json", "csv"):
            raise exceptions.ValidationError({"output": ["One of json, csv."]})
        if fmt == "csv":
            period = group_by if group_by in ("day", "hour") else "day"
            rows = export.usage_csv_rows(tenant_id, period=period, start=start, end=end)
            response = StreamingHttpResponse(export.csv_lines(rows), content_type="text/csv")
            response["Content-Disposition"] = f'attachment; filename="usage-{period}.csv"'
            return response
        bot = request.query_params.get("bot")
        if bot:
            try:
                bot = str(uuid.UUID(bot))
            except ValueError:
                raise exceptions.ValidationError({"bot": ["A bot id (UUID)."]}) from None
        rows: list[dict[str, Any]]
        if group_by in ("day", "hour"):
            points = selectors.usage_series(
                tenant_id, period=group_by, start=start, end=end, bot_id=bot or None
            )
            rows = [_figures(p) | {"bucket": p.bucket} for p in points]
        elif group_by == "bot":
            rows = [
                _figures(b) | {"bot_id": b.bot_id, "bot_name": b.bot_name}
                for b in selectors.usage_by_bot(tenant_id, start=start, end=end)
            ]
        else:
            rows = [_figures(selectors.usage_totals(tenant_id, start=start, end=end))]
        body = {"group_by": group_by, "start": start, "end": end, "rows": rows}
        return Response(s.UsageSerializer(body).data)


def _figures(item: Any) -> dict[str, Any]:
    fields = (
        "requests", "ok", "failed", "prompt_tokens", "completion_tokens",
        "mean_ttft_ms", "mean_latency_ms",
    )  # fmt: skip
    return {field: getattr(item, field) for field in fields}


class MauView(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("months", OpenApiTypes.INT, default=12)],
        responses={200: s.MauSerializer, **ERRORS},
    )
    def get(self, request: Request) -> Response:
        """Monthly active users: this month against the limit, and the months before."""
        tenant_id = _tenant_id(request)
        raw = request.query_params.get("months", "12")
        # isascii: str.isdigit() also admits digits that int() refuses ("²").
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 60:
            raise exceptions.ValidationError({"months": ["A whole number from 1 to 60."]})
        limits = effective_limits(tenant_id)
        body = {
            "limit": limits.mau_limit,
            "enforcement": limits.enforcement,
            "current": selectors.mau_current(tenant_id),
            "history": selectors.mau_history(tenant_id, months=int(raw)),
        }
        return Response(s.MauSerializer(body).data)


class LicenceView(APIView):
    @extend_schema(responses={200: s.LicenceSerializer, **ERRORS})
    def get(self, request: Request) -> Response:
        """The limits in force now (the licence's, or the free tier's) and this month's
        use against them."""
        tenant_id = _tenant_id(request)
        limits = effective_limits(tenant_id)
        now = timezone.now()
        month = datetime(now.year, now.month, 1, tzinfo=UTC)
        totals = selectors.usage_totals(tenant_id, start=month, end=now)
        body = {
            "source": limits.source,
            "licence_id": limits.licence_id,
            "valid_until": limits.valid_until,
            "mau_limit": limits.mau_limit,
            "monthly_tokens": limits.monthly_tokens,
            "tenant_messages_per_minute": limits.tenant_messages_per_minute,
            "user_messages_per_minute": limits.user_messages_per_minute,
            "connector_kinds": sorted(limits.connector_kinds) if limits.connector_kinds else None,
            "max_bots": limits.max_bots,
            "enforcement": limits.enforcement,
            "tokens_used_this_month": totals.prompt_tokens + totals.completion_tokens,
            "mau_this_month": selectors.mau_current(tenant_id).active,
        }
        return Response(s.LicenceSerializer(body).data)
