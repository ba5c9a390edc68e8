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


class Connector(TenantOwnedModel):
    """A bot's binding to one channel. Its id is the public, unguessable ingress path."""

    class Kind(models.TextChoices):
        WEBHOOK = "webhook", "Signed webhook"
        DINGTALK = "dingtalk", "DingTalk"
        ALIGENIE = "aligenie", "Tmall Genie (AliGenie)"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="connectors")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    name = models.CharField(max_length=200)
    secret = EncryptedTextField(help_text="Encrypted at rest with SWITCHBOARD_ENCRYPTION_KEY.")
    callback_url = models.URLField(blank=True, max_length=1000)
    enabled = models.BooleanField(default=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"
