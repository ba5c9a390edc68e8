from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from switchboard.licensing.documents import (
    LicenceTerms,
    generate_private_key_pem,
    key_id,
    public_key_b64,
    sign_licence,
)


@pytest.fixture(autouse=True)
def _fresh_limits_cache() -> Iterator[None]:
    from switchboard.licensing.services import limits_cache_clear

    limits_cache_clear()
    yield
    limits_cache_clear()


@pytest.fixture(scope="session")
def signing_pem() -> bytes:
    return generate_private_key_pem()


@pytest.fixture(scope="session")
def other_pem() -> bytes:
    return generate_private_key_pem()


@pytest.fixture
def trusted(settings: Any, signing_pem: bytes) -> list[str]:
    """This installation trusts `signing_pem` (and not `other_pem`)."""
    keys = [public_key_b64(signing_pem)]
    settings.SWITCHBOARD_LICENCE_PUBLIC_KEYS = keys
    return keys


def utcnow() -> datetime:
    return datetime.now(tz=UTC).replace(microsecond=0)


def make_terms(tenant: str = "acme", **overrides: Any) -> LicenceTerms:
    now = utcnow()
    fields: dict[str, Any] = {
        "licence_id": uuid.uuid4(),
        "tenant": tenant,
        "issued_at": now,
        "valid_from": now - timedelta(days=1),
        "valid_until": now + timedelta(days=30),
        "mau_limit": 1000,
        "monthly_tokens": 5_000_000,
        "tenant_messages_per_minute": 600,
        "user_messages_per_minute": 20,
        "connector_kinds": ("webhook", "dingtalk"),
        "max_bots": 3,
        "enforcement": "hard",
    }
    fields.update(overrides)
    return LicenceTerms(**fields)


@pytest.fixture
def issue(signing_pem: bytes) -> Callable[..., str]:
    """A signed document for `make_terms(**overrides)`, signed with the trusted key."""

    def issue(tenant: str = "acme", *, pem: bytes | None = None, **overrides: Any) -> str:
        return sign_licence(make_terms(tenant, **overrides), pem or signing_pem)

    return issue


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def envelope(text: str) -> dict[str, Any]:
    return json.loads(text)


def sign_raw(payload: bytes, pem: bytes) -> str:
    """A document over arbitrary payload bytes, correctly signed with `pem`."""
    key = serialization.load_pem_private_key(pem, password=None)
    return json.dumps(
        {
            "format": "switchboard-licence/1",
            "key_id": key_id(public_key_b64(pem)),
            "payload": b64url(payload),
            "signature": b64url(key.sign(payload)),  # type: ignore[union-attr,call-arg]
        }
    )
