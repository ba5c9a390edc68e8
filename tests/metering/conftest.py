from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone


@pytest.fixture(autouse=True)
def _fresh_metering_caches() -> Iterator[None]:
    from switchboard.licensing.services import limits_cache_clear
    from switchboard.metering import admission, alerts

    limits_cache_clear()
    alerts.cache_clear()
    admission.redis_reset()
    yield
    limits_cache_clear()
    alerts.cache_clear()


@pytest.fixture
def licence_for() -> Callable[..., Any]:
    """Put limits in force for a tenant: a ledger row as an import would write it
    (signing is tested in tests/licensing; here only the limits matter)."""
    from switchboard.licensing.models import Licence
    from switchboard.licensing.services import limits_cache_clear

    def make(tenant: Any, **limits: Any) -> Any:
        now = timezone.now()
        columns: dict[str, Any] = {
            "mau_limit": None,
            "monthly_tokens": None,
            "tenant_messages_per_minute": None,
            "user_messages_per_minute": None,
            "connector_kinds": [],
            "max_bots": None,
            "enforcement": "hard",
        }
        columns.update(limits)
        licence = Licence.objects.create(
            tenant=tenant,
            licence_id=uuid.uuid4(),
            key_id="test",
            document="{}",
            issued_at=now,
            valid_from=now - timedelta(days=1),
            valid_until=now + timedelta(days=365),
            **columns,
        )
        limits_cache_clear()
        return licence

    return make
