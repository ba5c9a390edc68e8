from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from switchboard.conversations import delivery
from switchboard.conversations.models import Conversation, DeliveryAttempt, EndUser, Message


@admin.register(EndUser)
class EndUserAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["external_id", "channel", "tenant", "first_seen_at", "last_seen_at"]
    list_filter = ["channel", "tenant"]
    search_fields = ["external_id", "display_name"]


class MessageInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Message
    extra = 0
    can_delete = False
    fields = [
        "created_at",
        "direction",
        "text",
        "status",
        "prompt_tokens",
        "completion_tokens",
        "ttft_ms",
        "latency_ms",
        "endpoint",
    ]
    readonly_fields = fields


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["external_key", "bot", "end_user", "tenant", "last_message_at"]
    list_filter = ["tenant", "bot"]
    search_fields = ["external_key", "end_user__external_id"]
    inlines = [MessageInline]


class DeliveryAttemptInline(admin.TabularInline):  # type: ignore[type-arg]
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = [
        "created_at",
        "attempt",
        "outcome",
        "via",
        "http_status",
        "latency_ms",
        "response_excerpt",
        "error",
        "replay",
    ]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """The delivery log: append-only, so nothing here can be added or changed."""

    list_display = [
        "created_at",
        "connector",
        "message",
        "attempt",
        "outcome",
        "via",
        "http_status",
        "latency_ms",
        "replay",
    ]
    list_filter = ["outcome", "via", "replay"]
    search_fields = ["error", "response_excerpt", "message__id"]
    readonly_fields = [f.name for f in DeliveryAttempt._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "created_at",
        "direction",
        "status",
        "short_text",
        "prompt_tokens",
        "completion_tokens",
        "ttft_ms",
        "latency_ms",
        "endpoint",
        "tenant",
    ]
    list_filter = ["direction", "status", "tenant"]
    search_fields = ["text", "provider_message_id"]
    readonly_fields = [f.name for f in Message._meta.fields]
    inlines = [DeliveryAttemptInline]
    actions = ["replay"]

    @admin.action(description="Replay delivery (send the reply again)")
    def replay(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        replayed = sum(delivery.reply_replay(message_id=m.pk) for m in queryset)
        self.message_user(
            request,
            f"{replayed} of {queryset.count()} message(s) queued again "
            "(only outbound, non-voice messages can be replayed).",
        )

    @admin.display(description="text")
    def short_text(self, obj: Message) -> str:
        return obj.text[:80]
