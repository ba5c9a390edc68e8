"""Importing licences into the ledger, and the limits they put in force."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from switchboard.licensing.documents import (
    ExpiredLicence,
    LicenceError,
    LicenceTerms,
    document_key_id,
    verify_signature_only,
)
from switchboard.licensing.limits import Limits, free_tier
from switchboard.licensing.models import Licence
from switchboard.tenants.models import Tenant


class UnknownTenant(LicenceError):
    pass


class DuplicateLicence(LicenceError):
    pass


def _format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def licence_import(*, text: str, imported_by: str = "", now: datetime | None = None) -> Licence:
    """Verify a licence document and append it to the ledger.

    A licence that is not valid yet is accepted: a renewal imported ahead of time comes
    into force by itself. An expired one is refused. Any refusal raises LicenceError and
    changes nothing.
    """
    now = now or timezone.now()
    terms = verify_signature_only(text, settings.SWITCHBOARD_LICENCE_PUBLIC_KEYS)
    if now >= terms.valid_until:
        raise ExpiredLicence(
            f"licence {terms.licence_id} expired on {_format_time(terms.valid_until)}"
        )
    tenant = Tenant.objects.filter(slug=terms.tenant).first()
    if tenant is None:
        raise UnknownTenant(
            f"no tenant with slug {terms.tenant!r}: the licence {terms.licence_id} was issued "
            "for a tenant this installation does not have"
        )
    _refuse_duplicate(terms.licence_id)
    try:
        with transaction.atomic():
            licence = Licence.objects.create(
                tenant=tenant,
                key_id=document_key_id(text),
                document=text,
                **_columns(terms),
                imported_by=imported_by,
            )
    except IntegrityError:
        # Two imports of one document raced; the other one won.
        _refuse_duplicate(terms.licence_id)
        raise
    limits_cache_clear()
    # Another thread of this process may have reloaded the old limits between the clear
    # above and the commit; clear again once the new row is visible.
    transaction.on_commit(limits_cache_clear)
    return licence


def _refuse_duplicate(licence_id: uuid.UUID) -> None:
    existing = Licence.objects.filter(licence_id=licence_id).first()
    if existing is not None:
        raise DuplicateLicence(
            f"licence {licence_id} was already imported on "
            f"{_format_time(existing.imported_at)}"
            + (f" by {existing.imported_by}" if existing.imported_by else "")
        )


def _columns(terms: LicenceTerms) -> dict[str, Any]:
    return {
        "licence_id": terms.licence_id,
        "issued_at": terms.issued_at,
        "valid_from": terms.valid_from,
        "valid_until": terms.valid_until,
        "mau_limit": terms.mau_limit,
        "monthly_tokens": terms.monthly_tokens,
        "tenant_messages_per_minute": terms.tenant_messages_per_minute,
        "user_messages_per_minute": terms.user_messages_per_minute,
        "connector_kinds": list(terms.connector_kinds),
        "max_bots": terms.max_bots,
        "enforcement": terms.enforcement,
    }


def licence_current(tenant: Tenant | Any, now: datetime | None = None) -> Licence | None:
    """The licence in force: the newest issued among those valid at `now`."""
    tenant_id = getattr(tenant, "pk", tenant)
    now = now or timezone.now()
    return (
        Licence.objects.filter(tenant_id=tenant_id, valid_from__lte=now, valid_until__gt=now)
        .order_by("-issued_at", "-id")
        .first()
    )


def limits_from_licence(licence: Licence) -> Limits:
    return Limits(
        mau_limit=licence.mau_limit,
        monthly_tokens=licence.monthly_tokens,
        tenant_messages_per_minute=licence.tenant_messages_per_minute,
        user_messages_per_minute=licence.user_messages_per_minute,
        connector_kinds=frozenset(licence.connector_kinds) if licence.connector_kinds else None,
        max_bots=licence.max_bots,
        enforcement=licence.enforcement,
        source="licence",
        licence_id=str(licence.licence_id),
        valid_until=licence.valid_until,
    )


# Per process: {tenant id: (monotonic deadline, limits)}. Every inbound message asks for
# its tenant's limits, so the database is asked at most once per TTL per tenant.
_cache: dict[str, tuple[float, Limits]] = {}
_cache_lock = threading.Lock()


def limits_cache_clear() -> None:
    with _cache_lock:
        _cache.clear()


def effective_limits(tenant_id: uuid.UUID | str | Tenant) -> Limits:
    """The limits in force for a tenant: its current licence's, else the free tier's."""
    key = str(getattr(tenant_id, "pk", tenant_id))
    started = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and hit[0] > started:
        return hit[1]
    licence = licence_current(key)
    limits = limits_from_licence(licence) if licence is not None else free_tier()
    ttl = settings.SWITCHBOARD_LIMITS_CACHE_S
    if ttl > 0:
        with _cache_lock:
            _cache[key] = (started + ttl, limits)
    return limits


def bot_create_allowed(tenant_id: uuid.UUID | str | Tenant) -> None:
    """Raise ValidationError when the tenant already has as many bots as it may."""
    # Imported here: bots.models calls this from Bot.clean().
    from switchboard.bots.models import Bot

    limits = effective_limits(tenant_id)
    if limits.max_bots is None:
        return
    count = Bot.objects.for_tenant(tenant_id).count()
    if count >= limits.max_bots:
        raise ValidationError(
            f"This tenant already has {count} bot(s), the most its {limits.source} allows "
            f"({limits.max_bots}). Import a licence with a higher max_bots, or remove a bot.",
            code="max_bots",
        )


def connector_kind_allowed(tenant_id: uuid.UUID | str | Tenant, kind: str) -> None:
    """Raise ValidationError when the tenant's limits do not allow this connector kind."""
    limits = effective_limits(tenant_id)
    if not limits.allows_connector(kind):
        allowed = ", ".join(sorted(limits.connector_kinds or ()))
        raise ValidationError(
            f"The tenant's {limits.source} does not allow {kind} connectors (allowed: {allowed}).",
            code="connector_not_licensed",
        )
