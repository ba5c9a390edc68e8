"""A vLLM look-alike server for tests and local development (no GPU, no model weights).

Run it with ``python -m inference.simulator --port 8101``; embed it with `create_app`.
"""

from __future__ import annotations

from inference.simulator.app import VERSION, SimulatorConfig, create_app
from inference.simulator.tokens import count_prompt_tokens, render_chatml, tokenize

__all__ = [
    "VERSION",
    "SimulatorConfig",
    "count_prompt_tokens",
    "create_app",
    "render_chatml",
    "tokenize",
]
