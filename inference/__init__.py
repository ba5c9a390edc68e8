"""Switchboard inference: talking to vLLM (OpenAI-compatible) model servers.

Framework-free on purpose: nothing here imports Django, so the same code serves the web
app, workers, scripts and tests. Collaborators (endpoints, transports, client factories)
are passed in; there is no module-level state.
"""

from __future__ import annotations

from inference.client import VLLMClient
from inference.pool import Pool, rendezvous_weight
from inference.types import (
    BadResponse,
    ChatRequest,
    ChatResult,
    ContextTooLong,
    Endpoint,
    EndpointDown,
    InferenceError,
    InferenceTimeout,
    Overloaded,
    PartialFailure,
    PoolUnavailable,
    RequestRejected,
    Timeouts,
)

__all__ = [
    "BadResponse",
    "ChatRequest",
    "ChatResult",
    "ContextTooLong",
    "Endpoint",
    "EndpointDown",
    "InferenceError",
    "InferenceTimeout",
    "Overloaded",
    "PartialFailure",
    "Pool",
    "PoolUnavailable",
    "RequestRejected",
    "Timeouts",
    "VLLMClient",
    "rendezvous_weight",
]
