"""A vLLM look-alike server for tests and local development (no GPU, no model weights).

Run it with ``python -m inference.simulator --port 8101``; embed it with `create_app`.
The performance model is documented in `inference.simulator.engine`, fault injection in
`inference.simulator.faults`.
"""

from __future__ import annotations

from inference.simulator.app import VERSION, create_app
from inference.simulator.config import SimulatorConfig
from inference.simulator.engine import Engine, EngineConfig
from inference.simulator.faults import FaultSettings
from inference.simulator.tokens import count_prompt_tokens, encode, render_chatml, tokenize

__all__ = [
    "VERSION",
    "Engine",
    "EngineConfig",
    "FaultSettings",
    "SimulatorConfig",
    "count_prompt_tokens",
    "create_app",
    "encode",
    "render_chatml",
    "tokenize",
]
