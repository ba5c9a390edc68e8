"""Endpoints for the framework-free pool in `inference/`: Django rows in, plain objects out."""

from __future__ import annotations

from inference import Endpoint
from switchboard.pool.models import InferenceEndpoint


def endpoint_list_enabled(*, model: str | None = None) -> list[Endpoint]:
    rows = InferenceEndpoint.objects.filter(enabled=True).order_by("name")
    if model is not None:
        rows = rows.filter(model=model)
    return [Endpoint(name=row.name, url=row.url.rstrip("/"), model=row.model) for row in rows]
