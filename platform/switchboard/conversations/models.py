from __future__ import annotations

import uuid

from django.db import models

from switchboard.core.models import TenantOwnedModel


class EndUser(TenantOwnedModel):
    """A person talking to a tenant's bots, identified per channel (the MAU identity)."""

    channel = models.CharField(max_length=20)
    external_id = models.CharField(max_length=200)
    display_name = models.CharField(max_length=200, blank=True)
    first_seen_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now_add=True)
    # The month (first day, UTC) this user was last counted in MAU, and the models it
    # was counted for then: the admission hot path reads them with the row it loads
    # anyway, so a user already counted this month costs no write.
    counted_month = models.DateField(null=True, blank=True)
    counted_models = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "channel", "external_id"], name="end_user_identity_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel}:{self.external_id}"


class Conversation(TenantOwnedModel):
    bot = models.ForeignKey("bots.Bot", on_delete=models.CASCADE, related_name="conversations")
    connector = models.ForeignKey(
        "bots.Connector", on_delete=models.CASCADE, related_name="conversations"
    )
    end_user = models.ForeignKey(EndUser, on_delete=models.CASCADE, related_name="conversations")
    external_key = models.CharField(max_length=250)
    created_at = models.DateTimeField(auto_now_add=True)
    last_message_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["connector", "external_key"], name="conversation_key_unique_per_connector"
            ),
        ]

    def __str__(self) -> str:
        return self.external_key


class Message(TenantOwnedModel):
    class Direction(models.TextChoices):
        INBOUND = "in", "Inbound"
        OUTBOUND = "out", "Outbound"

    class Status(models.TextChoices):
        # inbound
        RECEIVED = "received", "Received"
        PROCESSING = "processing", "Processing"
        REPLIED = "replied", "Replied"
        FAILED = "failed", "Failed"
        REFUSED = "refused", "Refused (licence, quota or rate limit)"
        # outbound
        PENDING = "pending", "Delivery pending"
        DELIVERED = "delivered", "Delivered"
        UNDELIVERABLE = "undeliverable", "Undeliverable"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    connector = models.ForeignKey("bots.Connector", on_delete=models.CASCADE, related_name="+")
    direction = models.CharField(max_length=3, choices=Direction.choices)
    text = models.TextField()
    # Empty on outbound messages; unique per connector among inbound ones.
    provider_message_id = models.CharField(max_length=200, blank=True, default="")
    # What the channel needs to answer this message (session webhook, caller's ids, ...).
    reply_handle = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices)
    # An outbound message answers exactly one inbound one; the one-to-one key makes a
    # second reply to the same message impossible even if two workers race.
    reply_to = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="reply"
    )
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    ttft_ms = models.FloatField(null=True, blank=True, help_text="Time to first token")
    latency_ms = models.FloatField(null=True, blank=True, help_text="Total inference latency")
    finish_reason = models.CharField(max_length=20, blank=True)
    endpoint = models.ForeignKey(
        "pool.InferenceEndpoint", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    refusal = models.CharField(
        max_length=30, blank=True, help_text="Why admission refused this message."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    # When a failed delivery is due again; lets the sweeper re-enqueue retries that lived
    # only in Redis.
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["connector", "provider_message_id"],
                condition=models.Q(direction="in"),
                name="inbound_provider_id_unique_per_connector",
            ),
        ]
        indexes = [
            models.Index(fields=["conversation", "created_at"], name="message_conversation_time"),
            # Rate-limit windows are rebuilt from here after Redis loses them.
            models.Index(fields=["tenant", "created_at"], name="message_tenant_time"),
            models.Index(
                fields=["status", "created_at"],
                condition=models.Q(status__in=["received", "processing", "pending"]),
                name="message_open_work",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.direction} {self.text[:40]}"


class DeliveryAttempt(TenantOwnedModel):
    """One try at delivering an outbound message: an append-only log, never edited."""

    class Outcome(models.TextChoices):
        DELIVERED = "delivered", "Delivered"
        RETRYING = "retrying", "Failed, will retry"
        FAILED = "failed", "Failed for good"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="deliveries")
    connector = models.ForeignKey("bots.Connector", on_delete=models.CASCADE, related_name="+")
    attempt = models.PositiveSmallIntegerField()
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    via = models.CharField(max_length=30, help_text="callback, session_webhook, openapi, ...")
    target = models.CharField(max_length=1000, blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    response_excerpt = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    replay = models.BooleanField(default=False, help_text="Started by an admin's replay.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["message", "created_at"], name="delivery_message_time")]

    def __str__(self) -> str:
        return f"attempt {self.attempt} {self.outcome}"
