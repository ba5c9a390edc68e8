"""Who may use the console, for which tenant, in which role."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Role(models.TextChoices):
    # Every tenant, the GPU pool and licences.
    OPERATOR = "operator", "Operator"
    # One tenant: bots, connectors, API keys, everything in it.
    ADMIN = "admin", "Tenant admin"
    # One tenant, read only.
    VIEWER = "viewer", "Tenant viewer"


class Membership(models.Model):
    """A console user's role. Operators have no tenant; the others exactly one.
    Superusers are operators without a membership row."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership"
    )
    tenant = models.ForeignKey(
        "tenants.Tenant", null=True, blank=True, on_delete=models.CASCADE, related_name="members"
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    # The console's language for this user, applied at every login.
    language = models.CharField(max_length=10, choices=settings.LANGUAGES, default="en")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(role="operator", tenant__isnull=True))
                | (~models.Q(role="operator") & models.Q(tenant__isnull=False)),
                name="membership_tenant_matches_role",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.role})"
