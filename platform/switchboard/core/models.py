"""Tenant scoping shared by every tenant-owned model.

Tenant-owned rows are read through `Model.objects.for_tenant(tenant)`; the default
manager of a tenant-owned model has no other public entry for lists, so a forgotten
filter shows up in review as a missing `for_tenant` call rather than as a leak.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import models

if TYPE_CHECKING:
    from switchboard.tenants.models import Tenant


class TenantScopedQuerySet(models.QuerySet):  # type: ignore[type-arg]
    def for_tenant(self, tenant: Tenant | Any) -> TenantScopedQuerySet:
        tenant_id = getattr(tenant, "pk", tenant)
        if tenant_id is None:
            raise ValueError("for_tenant() needs a saved tenant")
        return self.filter(tenant_id=tenant_id)


class TenantOwnedModel(models.Model):
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        abstract = True
