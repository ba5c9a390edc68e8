"""Arguments shared by the metering commands. (The leading underscore keeps Django from
taking this module for a command.)"""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, time

from django.core.management.base import CommandError

from switchboard.tenants.models import Tenant


def day(value: str) -> date:
    """argparse type for YYYY-MM-DD."""
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def midnight_utc(value: date) -> datetime:
    return datetime.combine(value, time.min, tzinfo=UTC)


def tenant_by_slug(slug: str) -> Tenant:
    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is None:
        raise CommandError(f"no tenant with slug {slug!r}")
    return tenant
