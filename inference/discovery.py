"""Where the pool's endpoints come from. The Django side supplies one backed by the
database; anything with an `endpoints()` method will do."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from inference.types import Endpoint


class Discovery(Protocol):
    def endpoints(self) -> Sequence[Endpoint]:
        """The current endpoints, draining ones included (so in-flight work is tracked)."""
        ...


class StaticDiscovery:
    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        self._endpoints = tuple(endpoints)

    def endpoints(self) -> Sequence[Endpoint]:
        return self._endpoints
