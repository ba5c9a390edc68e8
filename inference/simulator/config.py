"""Everything that configures one simulated vLLM server."""

from __future__ import annotations

from dataclasses import dataclass, field

from inference.simulator.engine import EngineConfig
from inference.simulator.faults import FaultSettings


@dataclass(frozen=True)
class SimulatorConfig:
    model: str = "Qwen/Qwen-7B-Chat"
    max_model_len: int = 8192
    name: str = "sim-1"
    # Used for sampling when a request brings no seed, and for fault decisions.
    seed: int = 0
    # Bounds of a reply's natural length in tokens; 0 and 0 means "just the marker".
    reply_min_tokens: int = 20
    reply_max_tokens: int = 120
    engine: EngineConfig = field(default_factory=EngineConfig)
    faults: FaultSettings = field(default_factory=FaultSettings)

    def __post_init__(self) -> None:
        if self.max_model_len < 2:
            raise ValueError("max_model_len must be at least 2")
        if not 0 <= self.reply_min_tokens <= self.reply_max_tokens:
            raise ValueError(
                "reply token bounds need 0 <= reply_min_tokens <= reply_max_tokens, got "
                f"{self.reply_min_tokens} and {self.reply_max_tokens}"
            )
        self.engine.check(self.max_model_len)
