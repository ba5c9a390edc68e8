"""Fault injection: the ways a real vLLM endpoint misbehaves, on demand and reproducibly.

Each chat completion that passes validation draws its fate from the app's own
`random.Random(seed)`, always consuming the same number of draws, so a given `--seed` and
request order give the same faults on every run. In order of precedence:

* **error** (`error_rate`): answered at once with HTTP 503 and vLLM's body for a retryable
  engine failure, ``{"error": {"message", "type": "ServiceUnavailableError", "param": null,
  "code": 503}}``. 503, not 500, because that is what vLLM sends when a request may
  succeed if retried, and it is the failure a pool must route around.
* **hang** (`hang_rate`): the request is read and then nothing at all is sent, not even
  headers, until the client disconnects. It holds no batch slot.
* **latency spike** (`latency_spike_rate`, `latency_spike_ms`): the first token comes
  `latency_spike_ms` (scaled by `--time-scale`) later than the model says; the request
  keeps its batch slot and blocks meanwhile, and the spike counts in the reported TTFT.
* **die mid-stream** (`die_mid_stream_rate`): after 1 to 4 content tokens (fewer if the
  reply is shorter) the server drops the connection without ending the HTTP response, so a
  streaming client sees the body break off with no finish chunk and no ``[DONE]``; a
  non-streaming one gets headers and a truncated JSON body.

`--refuse-connections` is not here: it is a property of the listening socket, decided at
startup (see `inference.simulator.__main__`).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RATE_FIELDS = ("error_rate", "latency_spike_rate", "hang_rate", "die_mid_stream_rate")
_DIE_AFTER_TOKENS = (1, 4)


class FaultSettingsError(ValueError):
    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class FaultSettings:
    error_rate: float = 0.0
    latency_spike_rate: float = 0.0
    latency_spike_ms: float = 2000.0
    hang_rate: float = 0.0
    die_mid_stream_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in RATE_FIELDS:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:  # also rejects NaN
                raise FaultSettingsError(f"{name} must be between 0 and 1, got {value}", name)
        if not (self.latency_spike_ms >= 0 and math.isfinite(self.latency_spike_ms)):
            raise FaultSettingsError(
                f"latency_spike_ms must be a finite number >= 0, got {self.latency_spike_ms}",
                "latency_spike_ms",
            )

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    def updated(self, changes: Mapping[str, Any]) -> FaultSettings:
        """A copy with `changes` (as JSON from the admin endpoint) applied and checked."""
        known = {f.name for f in dataclasses.fields(self)}
        values: dict[str, float] = {}
        for name, value in changes.items():
            if name == "refuse_connections":
                raise FaultSettingsError(
                    "refuse_connections can only be set at startup (--refuse-connections): "
                    "a server that refuses connections could not be told to stop",
                    name,
                )
            if name not in known:
                raise FaultSettingsError(f"unknown fault setting {name!r}", name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FaultSettingsError(f"{name} must be a number", name)
            values[name] = float(value)
        return dataclasses.replace(self, **values)


@dataclass(frozen=True)
class FaultPlan:
    """What will go wrong with one request."""

    error: bool = False
    hang: bool = False
    spike_ms: float = 0.0
    die_after_tokens: int | None = None


class FaultInjector:
    """Current settings plus the seeded generator every fault decision draws from."""

    def __init__(self, settings: FaultSettings, seed: int) -> None:
        self.settings = settings
        # Reproducibility, not secrecy, is the point of this generator.
        self._rng = random.Random(seed)  # noqa: S311

    def update(self, changes: Mapping[str, Any]) -> FaultSettings:
        self.settings = self.settings.updated(changes)
        return self.settings

    def draw(self) -> FaultPlan:
        s = self.settings
        rng = self._rng
        # Always five draws, whatever is enabled, so turning one fault on or off does not
        # reshuffle the others.
        error = rng.random() < s.error_rate
        hang = rng.random() < s.hang_rate
        spike = rng.random() < s.latency_spike_rate
        die = rng.random() < s.die_mid_stream_rate
        die_after = rng.randint(*_DIE_AFTER_TOKENS)
        if error:
            return FaultPlan(error=True)
        if hang:
            return FaultPlan(hang=True)
        return FaultPlan(
            spike_ms=s.latency_spike_ms if spike else 0.0,
            die_after_tokens=die_after if die else None,
        )
