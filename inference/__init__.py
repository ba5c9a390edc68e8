"""Switchboard inference: talking to a pool of vLLM (OpenAI-compatible) model servers.

Framework-free on purpose: nothing here imports Django, so the same code serves the web
app, workers, scripts and tests. Collaborators (endpoints, transports, client factories)
are passed in; there is no module-level state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inference.aclient import AsyncVLLMClient
from inference.admission import AdmissionController
from inference.breaker import BreakerState, CircuitBreaker
from inference.client import VLLMClient
from inference.discovery import Discovery, StaticDiscovery
from inference.health import HealthMonitor, parse_vllm_metrics, probe
from inference.pool import EndpointStatus, Pool
from inference.strategies import (
    Candidate,
    LeastLoaded,
    RoundRobin,
    RoutingStrategy,
    SessionAffinity,
    strategy_by_name,
)
from inference.types import (
    BadResponse,
    Busy,
    ChatRequest,
    ChatResult,
    ContextTooLong,
    Endpoint,
    EndpointDown,
    EngineStats,
    InferenceError,
    InferenceTimeout,
    Overloaded,
    PartialFailure,
    PoolUnavailable,
    Priority,
    RequestRejected,
    RouteContext,
    Timeouts,
    TokenDelta,
)

if TYPE_CHECKING:
    from inference.chat_model import PoolChatModel


def __getattr__(name: str) -> Any:
    # langchain-core takes most of a second to import; the simulator and plain clients
    # should not pay for it.
    if name == "PoolChatModel":
        from inference.chat_model import PoolChatModel

        return PoolChatModel
    raise AttributeError(f"module 'inference' has no attribute {name!r}")


__all__ = [
    "AdmissionController",
    "AsyncVLLMClient",
    "BadResponse",
    "BreakerState",
    "Busy",
    "Candidate",
    "ChatRequest",
    "ChatResult",
    "CircuitBreaker",
    "ContextTooLong",
    "Discovery",
    "Endpoint",
    "EndpointDown",
    "EndpointStatus",
    "EngineStats",
    "HealthMonitor",
    "InferenceError",
    "InferenceTimeout",
    "LeastLoaded",
    "Overloaded",
    "PartialFailure",
    "Pool",
    "PoolChatModel",
    "PoolUnavailable",
    "Priority",
    "RequestRejected",
    "RoundRobin",
    "RouteContext",
    "RoutingStrategy",
    "SessionAffinity",
    "StaticDiscovery",
    "Timeouts",
    "TokenDelta",
    "VLLMClient",
    "parse_vllm_metrics",
    "probe",
    "strategy_by_name",
]
