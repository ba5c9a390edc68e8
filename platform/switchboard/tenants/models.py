from __future__ import annotations

import uuid

from django.db import models

from switchboard.core.fields import EncryptedTextField


class Tenant(models.Model):
    """A customer organisation; everything else a customer owns hangs off one."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Overrides of the built-in refusal replies, {reason: {language: text}}; see
    # switchboard.licensing.replies for the reasons, languages and defaults.
    refusal_replies = models.JSONField(default=dict, blank=True)
    alert_webhook_url = models.URLField(
        blank=True,
        max_length=1000,
        help_text="Receives licence alerts (80, 90, 100 % of the MAU limit) as signed JSON.",
    )
    alert_webhook_secret = EncryptedTextField(
        blank=True, help_text="Signs alert webhooks (HMAC-SHA256, as outbound replies)."
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
