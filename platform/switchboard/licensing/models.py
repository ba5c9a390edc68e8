"""Licences: signed documents giving a tenant its limits, kept as an append-only ledger,
and the registry of the served models' own licence terms."""

from __future__ import annotations

from django.db import models

from switchboard.core.appendonly import AppendOnlyModel


class Enforcement(models.TextChoices):
    # hard: a new end user beyond the MAU limit is refused; existing ones keep service.
    HARD = "hard", "Hard (refuse new end users beyond the limit)"
    # soft: everyone is served and the overage is recorded.
    SOFT = "soft", "Soft (serve, record overage)"


class Licence(AppendOnlyModel):
    """One imported licence. Never edited: a new licence supersedes an old one.

    The signed `document` is kept verbatim so it can be verified again at any time; the
    other columns are what it said, for queries.
    """

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="licences")
    licence_id = models.UUIDField(unique=True)
    key_id = models.CharField(max_length=64, help_text="Fingerprint of the signing key.")
    document = models.TextField()
    issued_at = models.DateTimeField()
    valid_from = models.DateTimeField()
    valid_until = models.DateTimeField()
    mau_limit = models.PositiveBigIntegerField(null=True, blank=True, help_text="Empty: none.")
    monthly_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    tenant_messages_per_minute = models.PositiveIntegerField(null=True, blank=True)
    user_messages_per_minute = models.PositiveIntegerField(null=True, blank=True)
    connector_kinds = models.JSONField(
        default=list, blank=True, help_text="Allowed connector kinds; empty: all."
    )
    max_bots = models.PositiveIntegerField(null=True, blank=True)
    enforcement = models.CharField(max_length=4, choices=Enforcement.choices)
    imported_at = models.DateTimeField(auto_now_add=True)
    imported_by = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-imported_at", "-id"]
        indexes = [models.Index(fields=["tenant", "valid_until"], name="licence_tenant_until")]

    def __str__(self) -> str:
        return f"licence {self.licence_id} for {self.tenant_id}"


class ModelLicence(models.Model):
    """A served model's own licence terms (Qwen: a commercial licence above 100 M MAU)."""

    model_name = models.CharField(max_length=200, unique=True)
    licence_name = models.CharField(max_length=200)
    mau_threshold = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="Monthly active users above which the model's licence needs another "
        "agreement; empty: no threshold.",
    )
    terms_url = models.URLField(blank=True)
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["model_name"]

    def __str__(self) -> str:
        return self.model_name
