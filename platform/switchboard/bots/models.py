from __future__ import annotations

import uuid

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from switchboard.core.fields import EncryptedTextField
from switchboard.core.models import TenantOwnedModel

DEFAULT_MODEL = "Qwen/Qwen-7B-Chat"


class RoutingStrategy(models.TextChoices):
    SESSION_AFFINITY = "session_affinity", "Session affinity (KV-cache reuse, bounded load)"
    LEAST_LOADED = "least_loaded", "Least loaded"
    ROUND_ROBIN = "round_robin", "Round robin"


class Bot(TenantOwnedModel):
    """A configured assistant: what it is told, which model answers, and how."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    system_prompt = models.TextField(default="You are a helpful assistant.")
    model_name = models.CharField(max_length=200, default=DEFAULT_MODEL)
    temperature = models.FloatField(
        default=0.7, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)]
    )
    max_tokens = models.PositiveIntegerField(
        default=512, validators=[MinValueValidator(1), MaxValueValidator(32768)]
    )
    history_window = models.PositiveSmallIntegerField(
        default=10,
        validators=[MaxValueValidator(200)],
        help_text="How many earlier messages of the conversation go into the prompt.",
    )
    routing_strategy = models.CharField(
        max_length=30,
        choices=RoutingStrategy.choices,
        blank=True,
        help_text="How this bot's requests pick a GPU server; blank uses the installation "
        "default (SWITCHBOARD_ROUTING_STRATEGY).",
    )

    class ReplyFormat(models.TextChoices):
        TEXT = "text", "Plain text"
        MARKDOWN = "markdown", "Markdown"

    reply_format = models.CharField(
        max_length=10,
        choices=ReplyFormat.choices,
        default=ReplyFormat.TEXT,
        help_text="How replies are sent where the channel offers a choice (DingTalk).",
    )
    language = models.CharField(
        max_length=10,
        choices=[("zh-hans", "简体中文"), ("en", "English")],
        default="zh-hans",
        help_text="The language of the platform's own replies (refusals, slow down).",
    )
    unsupported_message_reply = models.TextField(
        default="抱歉，我目前只能理解文字消息。Sorry, I can only read text messages for now.",
        help_text="Sent when someone sends a picture, video, file or other message the bot "
        "cannot read.",
    )
    voice_instructions = models.TextField(
        default="You are speaking through a smart speaker. Answer in one or two short "
        "spoken sentences, in plain text, without markdown, lists or links.",
        help_text="Added to the system prompt for voice channels (Tmall Genie).",
    )
    voice_max_chars = models.PositiveIntegerField(
        default=150, help_text="Spoken answers are cut at a sentence boundary within this."
    )
    voice_pending_reply = models.TextField(
        default="我还在思考，请稍后再问我一次。",
        help_text="Spoken when the answer is not ready in time; the answer is kept for the "
        "next turn of the same session.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="bot_name_unique_per_tenant"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        super().clean()
        # Only creating a bot counts against the licence; existing ones stay editable.
        if self._state.adding and self.tenant_id is not None:
            from switchboard.licensing.services import bot_create_allowed

            bot_create_allowed(self.tenant_id)


class Connector(TenantOwnedModel):
    """A bot's binding to one channel. Its id is the public, unguessable ingress path.

    One table for every kind: the fields a kind does not use stay empty. Secrets (the
    webhook or DingTalk app secret, AliGenie's URL token and private key) are encrypted
    at rest.
    """

    class Kind(models.TextChoices):
        WEBHOOK = "webhook", "Signed webhook"
        DINGTALK = "dingtalk", "DingTalk"
        ALIGENIE = "aligenie", "Tmall Genie (AliGenie)"
        # Hidden, one per bot, made on first use: the console's test chat. It has no
        # ingress URL (the hooks look connectors up by their own kind) and its replies
        # are shown live in the console, so delivery has nothing to send.
        CONSOLE = "console", "Console test chat"
        # Hidden, one per bot, made on first use: messages sent through the tenant API
        # (REST and the OpenAI-compatible endpoint). No ingress URL either; the API key
        # is the credential.
        API = "api", "Tenant API"

    class DingTalkMode(models.TextChoices):
        HTTP = "http", "HTTP callback"
        STREAM = "stream", "Stream (WebSocket)"

    class Profile(models.TextChoices):
        STANDARD = "standard", "Standard Webhooks"
        STRIPE = "stripe", "Stripe-style (Stripe-Signature)"
        GITHUB = "github", "GitHub-style (X-Hub-Signature-256)"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="connectors")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    name = models.CharField(max_length=200)
    secret = EncryptedTextField(
        blank=True,
        help_text="Webhook signing secret or DingTalk app secret (Client Secret); "
        "encrypted at rest with SWITCHBOARD_ENCRYPTION_KEY.",
    )
    callback_url = models.URLField(blank=True, max_length=1000)
    allow_private_callback = models.BooleanField(
        default=False,
        help_text="Operator only: allow a callback URL on a loopback or private network.",
    )
    verification_profile = models.CharField(
        max_length=20, choices=Profile.choices, default=Profile.STANDARD
    )
    # DingTalk
    app_key = models.CharField(max_length=200, blank=True, help_text="DingTalk Client ID.")
    robot_code = models.CharField(max_length=200, blank=True)
    corp_id = models.CharField(
        max_length=200, blank=True, help_text="If set, inbound chatbotCorpId must match."
    )
    dingtalk_mode = models.CharField(
        max_length=10, choices=DingTalkMode.choices, default=DingTalkMode.HTTP
    )
    # AliGenie
    skill_id = models.BigIntegerField(null=True, blank=True)
    path_token = EncryptedTextField(
        blank=True, help_text="The unguessable segment of the AliGenie webhook URL."
    )
    private_key = EncryptedTextField(
        blank=True, help_text="PEM RSA private key for encrypted (securityQuery) requests."
    )
    ownership_file_name = models.CharField(max_length=100, blank=True)
    ownership_file_content = models.TextField(blank=True)
    voice_budget_ms = models.PositiveIntegerField(
        default=2500, help_text="How long a speaker may wait for the answer."
    )
    # State
    enabled = models.BooleanField(default=True)
    consecutive_permanent_failures = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    def clean(self) -> None:
        super().clean()
        # Only a new connector, or a change of kind, needs the licence: after a licence
        # changes, existing connectors stay editable (and can be disabled).
        if not self.kind or self.tenant_id is None:
            return
        if self._state.adding or (
            Connector.objects.for_tenant(self.tenant_id)
            .filter(pk=self.pk)
            .exclude(kind=self.kind)
            .exists()
        ):
            from switchboard.licensing.services import connector_kind_allowed

            connector_kind_allowed(self.tenant_id, self.kind)
