"""Tenant API keys. Only a hash is stored: the key itself is shown once, at creation."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from switchboard.core.models import TenantOwnedModel


class Scope(models.TextChoices):
    READ = "read", "Read (lists, usage, MAU, licence status)"
    WRITE = "write", "Write (create, change and delete bots, connectors and keys)"
    CHAT = "chat", "Chat (send messages, OpenAI-compatible completions)"


def default_scopes() -> list[str]:
    # Least privilege: a key that was not given scopes can only look.
    return [Scope.READ]


class ApiKey(TenantOwnedModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    # The key's public part, shown in lists and used to find the row; the rest is secret.
    prefix = models.CharField(max_length=16, unique=True)
    # SHA-256 of the whole key: keys are 32 random bytes, so a slow hash adds nothing.
    secret_hash = models.CharField(max_length=64)
    scopes = models.JSONField(default=default_scopes)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes
