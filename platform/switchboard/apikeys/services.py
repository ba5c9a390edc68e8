"""Creating, revoking and checking API keys.

A key reads ``sb_<prefix>_<secret>``: the prefix finds the row with one indexed lookup,
the whole key is compared by its SHA-256 in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from switchboard.apikeys.models import ApiKey, Scope

KEY_PREFIX = "sb_"
# last_used_at is for people ("used 3 minutes ago"): a write per minute is plenty.
_LAST_USED_RESOLUTION = timedelta(minutes=1)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def scopes_clean(scopes: Any) -> list[str]:
    """Known scopes, deduplicated in a fixed order; ValueError names an unknown one."""
    if isinstance(scopes, str) or not isinstance(scopes, list | tuple | set | frozenset):
        raise ValueError('scopes must be a list, e.g. ["read", "chat"]')
    known = [scope.value for scope in Scope]
    unknown = sorted(str(s) for s in scopes if s not in known)
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(unknown)}; known: {', '.join(known)}")
    if not scopes:
        raise ValueError("an API key needs at least one scope")
    return [scope for scope in known if scope in scopes]


def api_key_create(
    *,
    tenant: Any,
    name: str,
    scopes: Any = (Scope.READ,),
    created_by: Any = None,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """A new key and its plaintext, which is never stored and cannot be shown again."""
    name = name.strip()
    if not name:
        raise ValueError("an API key needs a name")
    if len(name) > ApiKey._meta.get_field("name").max_length:  # type: ignore[operator]
        raise ValueError("an API key's name is at most 100 characters")
    scopes = scopes_clean(list(scopes) if isinstance(scopes, tuple) else scopes)
    if expires_at is not None and expires_at <= timezone.now():
        raise ValueError("an API key's expiry must be in the future")
    prefix = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    record = ApiKey.objects.create(
        tenant=tenant,
        name=name,
        prefix=prefix,
        secret_hash=_digest(key),
        scopes=scopes,
        created_by=created_by,
        expires_at=expires_at,
    )
    return record, key


def api_key_revoke(*, key: ApiKey) -> None:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])


def api_key_authenticate(plaintext: str, *, now: datetime | None = None) -> ApiKey | None:
    """The live key `plaintext` names, or None (unknown, wrong, revoked or expired)."""
    if not plaintext.startswith(KEY_PREFIX):
        return None
    prefix, _, secret = plaintext[len(KEY_PREFIX) :].partition("_")
    if not prefix or not secret:
        return None
    key = ApiKey.objects.select_related("tenant").filter(prefix=prefix).first()
    if key is None or not hmac.compare_digest(key.secret_hash, _digest(plaintext)):
        return None
    now = now or timezone.now()
    if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        return None
    if not key.tenant.is_active:
        return None
    if key.last_used_at is None or key.last_used_at < now - _LAST_USED_RESOLUTION:
        with transaction.atomic():
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key
