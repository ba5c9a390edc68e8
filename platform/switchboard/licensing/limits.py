"""What a tenant may do right now: its licence's limits, or the free tier's."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings


@dataclass(frozen=True)
class Limits:
    """Limits in force for one tenant. None means "no limit"."""

    mau_limit: int | None
    monthly_tokens: int | None
    tenant_messages_per_minute: int | None
    user_messages_per_minute: int | None
    # Allowed connector kinds; None: every kind.
    connector_kinds: frozenset[str] | None
    max_bots: int | None
    enforcement: str  # "hard" or "soft"
    # Where they come from: "licence" or "free tier".
    source: str
    licence_id: str | None = None
    valid_until: datetime | None = None

    def allows_connector(self, kind: str) -> bool:
        return self.connector_kinds is None or kind in self.connector_kinds


def free_tier() -> Limits:
    """The documented limits of a tenant without a valid licence (settings, README)."""
    tier = settings.SWITCHBOARD_FREE_TIER
    kinds = tier.get("connector_kinds")
    return Limits(
        mau_limit=tier.get("mau_limit"),
        monthly_tokens=tier.get("monthly_tokens"),
        tenant_messages_per_minute=tier.get("tenant_messages_per_minute"),
        user_messages_per_minute=tier.get("user_messages_per_minute"),
        connector_kinds=frozenset(kinds) if kinds else None,
        max_bots=tier.get("max_bots"),
        enforcement=tier.get("enforcement", "hard"),
        source="free tier",
    )
