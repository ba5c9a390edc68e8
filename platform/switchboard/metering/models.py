"""Metering: who was active when (MAU), what every inference call used (the ledger), its
rollups, and the alerts raised along the way.

PostgreSQL is the source of truth for all of it; Redis holds only counters that can be
rebuilt from these tables.
"""

from __future__ import annotations

from django.db import models

from switchboard.core.appendonly import AppendOnlyModel


class MonthlyActiveUser(models.Model):
    """One row per end user per tenant per calendar month (UTC): the MAU record.

    A composite key and nothing else keeps it near the minimum bytes per user-month;
    see BENCHMARKS.md for the measured size.
    """

    pk = models.CompositePrimaryKey("tenant_id", "month", "end_user_id")
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    month = models.DateField(help_text="First day of the month, UTC.")
    end_user = models.ForeignKey(
        "conversations.EndUser", on_delete=models.CASCADE, related_name="+"
    )
    # Soft mode: counted beyond the licence's limit (the overage).
    over_limit = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"{self.end_user_id} active in {self.month:%Y-%m}"


class MauCounter(models.Model):
    """A tenant's MAU for one month, kept with its MonthlyActiveUser rows in one
    transaction, so reading the current MAU is one primary-key lookup."""

    pk = models.CompositePrimaryKey("tenant_id", "month")
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    month = models.DateField()
    active = models.BigIntegerField(default=0)
    over_limit = models.BigIntegerField(default=0)
    refused = models.BigIntegerField(default=0, help_text="New end users refused (hard mode).")

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.month:%Y-%m}: {self.active}"


class ModelActiveUser(models.Model):
    """One row per end user per served model per month: the model licence's MAU."""

    pk = models.CompositePrimaryKey("model_name", "month", "end_user_id")
    model_name = models.CharField(max_length=200)
    month = models.DateField()
    end_user = models.ForeignKey(
        "conversations.EndUser", on_delete=models.CASCADE, related_name="+"
    )

    def __str__(self) -> str:
        return f"{self.end_user_id} on {self.model_name} in {self.month:%Y-%m}"


class ModelMauCounter(models.Model):
    pk = models.CompositePrimaryKey("model_name", "month")
    model_name = models.CharField(max_length=200)
    month = models.DateField()
    active = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.model_name} {self.month:%Y-%m}: {self.active}"


class Alert(models.Model):
    """A threshold crossed (80, 90, 100 % of a MAU limit), raised once per month."""

    class Subject(models.TextChoices):
        TENANT_MAU = "tenant_mau", "Tenant MAU against its licence"
        MODEL_MAU = "model_mau", "Installation MAU against a model's licence"

    # "tenant:<uuid>" or "model:<name>": one unique key for both kinds of scope.
    scope = models.CharField(max_length=250)
    subject = models.CharField(max_length=20, choices=Subject.choices)
    tenant = models.ForeignKey(
        "tenants.Tenant", null=True, blank=True, on_delete=models.CASCADE, related_name="alerts"
    )
    model_name = models.CharField(max_length=200, blank=True)
    month = models.DateField()
    threshold_percent = models.PositiveSmallIntegerField()
    value = models.BigIntegerField()
    limit = models.BigIntegerField()
    message = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    webhook_url = models.URLField(blank=True, max_length=1000)
    delivered_at = models.DateTimeField(null=True, blank=True)
    delivery_attempts = models.PositiveSmallIntegerField(default=0)
    delivery_error = models.TextField(blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["scope", "month", "threshold_percent"], name="alert_once_per_threshold"
            ),
        ]

    def __str__(self) -> str:
        return self.message


class UsageRecord(AppendOnlyModel):
    """One inference call, as billed. Never edited; references are kept as plain ids
    (no database constraint) so the ledger outlives deleted bots and users."""

    class Outcome(models.TextChoices):
        OK = "ok", "OK"
        PARTIAL = "partial", "Failed after tokens were sent"
        BUSY = "busy", "Pool busy"
        ERROR = "error", "Failed"

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="+")
    bot = models.ForeignKey(
        "bots.Bot", null=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    connector = models.ForeignKey(
        "bots.Connector",
        null=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    end_user = models.ForeignKey(
        "conversations.EndUser",
        null=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    message_id = models.UUIDField(null=True, help_text="The inbound message answered.")
    endpoint = models.CharField(max_length=200, blank=True)
    model_name = models.CharField(max_length=200, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    ttft_ms = models.FloatField(null=True)
    latency_ms = models.FloatField(null=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "created_at"], name="usage_tenant_time"),
        ]

    def __str__(self) -> str:
        return f"usage {self.pk} {self.outcome}"


class UsageRollup(models.Model):
    """Usage summed per tenant and bot over an hour or a day, kept up to date by beat
    and rebuildable from the ledger."""

    class Period(models.TextChoices):
        HOUR = "hour", "Hour"
        DAY = "day", "Day"

    period = models.CharField(max_length=4, choices=Period.choices)
    bucket = models.DateTimeField(help_text="Start of the hour or day, UTC.")
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    bot = models.ForeignKey(
        "bots.Bot", null=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    requests = models.BigIntegerField(default=0)
    ok = models.BigIntegerField(default=0)
    failed = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    ttft_ms_sum = models.FloatField(default=0.0)
    ttft_count = models.BigIntegerField(default=0)
    latency_ms_sum = models.FloatField(default=0.0)
    latency_count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["period", "bucket", "tenant", "bot"],
                name="rollup_unique_bucket",
                nulls_distinct=False,
            ),
        ]
        indexes = [models.Index(fields=["tenant", "period", "bucket"], name="rollup_tenant")]

    def __str__(self) -> str:
        return f"{self.period} {self.bucket:%Y-%m-%d %H:00} {self.tenant_id}"


class RollupCursor(models.Model):
    """How far into the ledger (by id) the rollups have been carried."""

    name = models.CharField(max_length=50, primary_key=True)
    last_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} at {self.last_id}"
