"""What the REST API reads and writes. Every related object is looked up within the
caller's tenant (`context["tenant_id"]`), so another tenant's id reads as unknown."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from switchboard.apikeys.models import ApiKey, Scope
from switchboard.bots.models import Bot, Connector
from switchboard.bots.services import connector_ingress_path
from switchboard.conversations.models import Conversation, EndUser, Message

# Kinds a tenant manages itself; console and API connectors are made by the platform.
MANAGED_KINDS = [Connector.Kind.WEBHOOK, Connector.Kind.DINGTALK, Connector.Kind.ALIGENIE]


def django_errors(exc: DjangoValidationError) -> serializers.ValidationError:
    """A model's `full_clean` errors in the API's validation shape."""
    if hasattr(exc, "error_dict"):
        return serializers.ValidationError(
            {field: [str(m) for m in messages] for field, messages in exc.message_dict.items()}
        )
    return serializers.ValidationError({"non_field_errors": exc.messages})


class BotSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = Bot
        fields = [
            "id", "name", "system_prompt", "model_name", "temperature", "max_tokens",
            "history_window", "routing_strategy", "reply_format", "language",
            "unsupported_message_reply", "voice_instructions", "voice_max_chars",
            "voice_pending_reply", "is_active", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["id", "created_at", "updated_at"]

    def validate_name(self, value: str) -> str:
        clash = Bot.objects.for_tenant(self.context["tenant_id"]).filter(name=value)
        if self.instance is not None:
            clash = clash.exclude(pk=self.instance.pk)
        if clash.exists():
            raise serializers.ValidationError("This tenant already has a bot with this name.")
        return value

    def create(self, validated_data: dict[str, Any]) -> Bot:
        bot = Bot(tenant_id=self.context["tenant_id"], **validated_data)
        return _saved(bot)

    def update(self, instance: Bot, validated_data: dict[str, Any]) -> Bot:
        for field, value in validated_data.items():
            setattr(instance, field, value)
        return _saved(instance)


def _saved(obj: Any) -> Any:
    try:
        obj.full_clean()
    except DjangoValidationError as exc:
        raise django_errors(exc) from None
    obj.save()
    return obj


class ConnectorSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """Secrets are write-only: a webhook's signing secret is returned once, in the
    response that created or rotated it, and never again."""

    kind = serializers.ChoiceField(choices=[(k.value, k.label) for k in MANAGED_KINDS])
    bot = serializers.PrimaryKeyRelatedField(queryset=Bot.objects.none())
    secret = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=500,
        help_text="Webhook signing secret (generated when left out) or DingTalk app secret.",
    )
    private_key = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=10000,
        help_text="AliGenie: PEM RSA private key for encrypted requests.",
    )
    has_secret = serializers.SerializerMethodField()
    ingress_path = serializers.SerializerMethodField()

    class Meta:
        model = Connector
        fields = [
            "id", "bot", "kind", "name", "secret", "has_secret", "callback_url",
            "verification_profile", "app_key", "robot_code", "corp_id", "dingtalk_mode",
            "skill_id", "private_key", "voice_budget_ms", "enabled", "ingress_path",
            "last_error", "last_error_at", "created_at",
        ]  # fmt: skip
        read_only_fields = ["id", "last_error", "last_error_at", "created_at"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tenant_id = self.context.get("tenant_id")
        if tenant_id is not None:
            self.fields["bot"].queryset = Bot.objects.for_tenant(tenant_id)  # type: ignore[attr-defined]
        if self.instance is not None and not isinstance(self.instance, list | tuple):
            # A connector's bot and kind are what its ingress URL means: fixed once made.
            self.fields["kind"].read_only = True
            self.fields["bot"].read_only = True

    @extend_schema_field(serializers.BooleanField())
    def get_has_secret(self, connector: Connector) -> bool:
        return bool(connector.secret or connector.private_key)

    @extend_schema_field(serializers.CharField())
    def get_ingress_path(self, connector: Connector) -> str:
        if connector.kind == Connector.Kind.ALIGENIE:
            # The path carries the secret URL token: shown once, like a secret.
            return connector_ingress_path(connector) if self.context.get("reveal") else ""
        return connector_ingress_path(connector)

    def create(self, validated_data: dict[str, Any]) -> Connector:
        from connectors.webhook import generate_secret
        from switchboard.bots.services import new_path_token

        kind = validated_data["kind"]
        if kind == Connector.Kind.WEBHOOK and not validated_data.get("secret"):
            validated_data["secret"] = generate_secret()
        if kind == Connector.Kind.ALIGENIE:
            validated_data["path_token"] = new_path_token()
        connector = Connector(tenant_id=self.context["tenant_id"], **validated_data)
        return _saved(connector)

    def update(self, instance: Connector, validated_data: dict[str, Any]) -> Connector:
        for field, value in validated_data.items():
            setattr(instance, field, value)
        return _saved(instance)


class EndUserSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = EndUser
        fields = ["id", "channel", "external_id", "display_name", "first_seen_at", "last_seen_at"]


class ConversationSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    end_user = EndUserSerializer(read_only=True)
    connector_kind = serializers.CharField(source="connector.kind", read_only=True)

    class Meta:
        model = Conversation
        fields = [
            "id", "bot", "connector", "connector_kind", "end_user", "external_key",
            "created_at", "last_message_at",
        ]  # fmt: skip


class MessageSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    reply = serializers.SerializerMethodField(help_text="The reply's id (inbound messages).")

    class Meta:
        model = Message
        fields = [
            "id", "conversation", "direction", "text", "status", "refusal", "reply_to",
            "reply", "prompt_tokens", "completion_tokens", "ttft_ms", "latency_ms",
            "finish_reason", "error", "created_at", "delivered_at",
        ]  # fmt: skip

    @extend_schema_field(serializers.UUIDField(allow_null=True))
    def get_reply(self, message: Message) -> str | None:
        try:
            reply = message.reply  # type: ignore[attr-defined]
        except Message.DoesNotExist:
            return None
        return str(reply.pk)


class SendMessageSerializer(serializers.Serializer):  # type: ignore[type-arg]
    MODES = ["async", "sync", "stream"]

    user = serializers.CharField(
        max_length=200, help_text="The end user's id in your system; counted in MAU."
    )
    user_name = serializers.CharField(max_length=200, required=False, default="")
    text = serializers.CharField(max_length=20000, trim_whitespace=False)
    conversation = serializers.CharField(
        max_length=200,
        required=False,
        default="",
        help_text="Your key for the conversation; the bot sees its earlier turns. "
        "Default: one conversation per user.",
    )
    message_id = serializers.CharField(
        max_length=150,
        required=False,
        default="",
        help_text="Your id for this message: a retry with the same id is answered once "
        "(async and sync modes).",
    )
    mode = serializers.ChoiceField(choices=MODES, default="async")
    timeout = serializers.FloatField(
        required=False,
        default=30.0,
        min_value=1.0,
        help_text="sync: seconds to wait for the reply before answering 202.",
    )
    callback_url = serializers.URLField(
        required=False,
        default="",
        max_length=1000,
        help_text="async: where the reply is POSTed, signed (Standard Webhooks) with the "
        "bot's API callback secret.",
    )

    def validate_text(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("The text is empty.")
        return value


class SendResultSerializer(serializers.Serializer):  # type: ignore[type-arg]
    message = MessageSerializer()
    reply = MessageSerializer(allow_null=True)


class ApiKeySerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=[s.value for s in Scope]),
        min_length=1,
        default=[Scope.READ.value],
    )

    class Meta:
        model = ApiKey
        fields = [
            "id", "name", "prefix", "scopes", "created_at", "expires_at", "last_used_at",
            "revoked_at",
        ]  # fmt: skip
        read_only_fields = ["id", "prefix", "created_at", "last_used_at", "revoked_at"]


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text="The key itself, shown this once.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]


class SecretSerializer(serializers.Serializer):  # type: ignore[type-arg]
    secret = serializers.CharField(read_only=True, help_text="Shown this once.")


class UsageRowSerializer(serializers.Serializer):  # type: ignore[type-arg]
    bucket = serializers.DateTimeField(required=False)
    bot_id = serializers.UUIDField(required=False, allow_null=True)
    bot_name = serializers.CharField(required=False)
    requests = serializers.IntegerField()
    ok = serializers.IntegerField()
    failed = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    mean_ttft_ms = serializers.FloatField(allow_null=True)
    mean_latency_ms = serializers.FloatField(allow_null=True)


class UsageSerializer(serializers.Serializer):  # type: ignore[type-arg]
    group_by = serializers.CharField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    rows = UsageRowSerializer(many=True)


class MauMonthSerializer(serializers.Serializer):  # type: ignore[type-arg]
    month = serializers.DateField()
    active = serializers.IntegerField()
    over_limit = serializers.IntegerField()
    refused = serializers.IntegerField()


class MauSerializer(serializers.Serializer):  # type: ignore[type-arg]
    limit = serializers.IntegerField(allow_null=True)
    enforcement = serializers.CharField()
    current = MauMonthSerializer()
    history = MauMonthSerializer(many=True)


class LicenceSerializer(serializers.Serializer):  # type: ignore[type-arg]
    source = serializers.CharField(help_text="`licence` or `free tier`.")
    licence_id = serializers.CharField(allow_null=True)
    valid_until = serializers.DateTimeField(allow_null=True)
    mau_limit = serializers.IntegerField(allow_null=True)
    monthly_tokens = serializers.IntegerField(allow_null=True)
    tenant_messages_per_minute = serializers.IntegerField(allow_null=True)
    user_messages_per_minute = serializers.IntegerField(allow_null=True)
    connector_kinds = serializers.ListField(child=serializers.CharField(), allow_null=True)
    max_bots = serializers.IntegerField(allow_null=True)
    enforcement = serializers.CharField()
    tokens_used_this_month = serializers.IntegerField()
    mau_this_month = serializers.IntegerField()


class ErrorDetailSerializer(serializers.Serializer):  # type: ignore[type-arg]
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.JSONField(required=False)


class ErrorSerializer(serializers.Serializer):  # type: ignore[type-arg]
    error = ErrorDetailSerializer()
