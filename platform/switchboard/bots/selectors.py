from __future__ import annotations

import uuid

from switchboard.bots.models import Connector


def connector_get_for_ingress(*, connector_id: str, kind: str) -> Connector | None:
    """The enabled connector of `kind` behind an ingress URL, or None.

    Unknown, malformed, disabled and wrong-kind ids all look the same to the caller, so
    an ingress cannot be used to probe which connector ids exist.
    """
    try:
        pk = uuid.UUID(connector_id)
    except ValueError:
        return None
    return (
        Connector.objects.select_related("bot", "tenant")
        .filter(pk=pk, kind=kind, enabled=True, bot__is_active=True, tenant__is_active=True)
        .first()
    )
