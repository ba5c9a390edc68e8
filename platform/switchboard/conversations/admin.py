from __future__ import annotations

from django.contrib import admin

from switchboard.conversations.models import Conversation, EndUser, Message


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

    @admin.display(description="text")
    def short_text(self, obj: Message) -> str:
        return obj.text[:80]
