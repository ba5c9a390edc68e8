"""System checks: a metrics setting that cannot work fails at startup, not at scrape."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks


def _metrics_networks(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    from switchboard.observability.views import parse_networks

    errors: list[checks.CheckMessage] = []
    for value in settings.SWITCHBOARD_METRICS_ALLOWED_NETWORKS:
        try:
            parse_networks((value,))
        except ValueError as exc:
            errors.append(
                checks.Error(
                    f"SWITCHBOARD_METRICS_ALLOWED_NETWORKS: {value!r} is not a network ({exc})",
                    hint="Use addresses or CIDR networks, comma-separated: 10.0.0.0/8,::1",
                    id="observability.E001",
                )
            )
    return errors


def register() -> None:
    checks.register(_metrics_networks, checks.Tags.security)
