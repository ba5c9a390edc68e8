"""Failover across several endpoints, with conversation affinity.

Ranking uses rendezvous (highest-random-weight) hashing: each (key, endpoint) pair gets a
pseudo-random weight and the endpoint with the highest weight wins. A conversation thus
keeps landing on the replica that already holds its KV-cache prefix, and adding or
removing a replica only moves the conversations that ranked it first.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

from inference.client import VLLMClient
from inference.types import (
    ChatRequest,
    ChatResult,
    Endpoint,
    InferenceError,
    PartialFailure,
    PoolUnavailable,
)

logger = logging.getLogger(__name__)


def rendezvous_weight(affinity_key: str, endpoint_url: str) -> int:
    # hashlib rather than hash(): str hashing is salted per process, and every web worker
    # must agree on the ranking for affinity to mean anything.
    digest = hashlib.sha256(
        affinity_key.encode("utf-8") + b"\x00" + endpoint_url.encode("utf-8")
    ).digest()
    return int.from_bytes(digest[:8], "big")


class Pool:
    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        client_factory: Callable[[Endpoint], VLLMClient] | None = None,
    ) -> None:
        self._endpoints: tuple[Endpoint, ...] = tuple(endpoints)
        self._client_factory: Callable[[Endpoint], VLLMClient] = client_factory or VLLMClient
        # Clients are kept per endpoint so their HTTP connections are reused across calls.
        self._clients: dict[Endpoint, VLLMClient] = {}
        self._lock = threading.Lock()

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return self._endpoints

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            client.close()

    def order(self, affinity_key: str) -> list[Endpoint]:
        """All endpoints, best first, for this affinity key."""
        return sorted(
            self._endpoints,
            # The url tie-break keeps the order total even for (astronomically unlikely)
            # equal weights, so every process ranks identically.
            key=lambda ep: (-rendezvous_weight(affinity_key, ep.url), ep.url),
        )

    def chat(self, request: ChatRequest, *, affinity_key: str, stream: bool = True) -> ChatResult:
        """Try endpoints in affinity order until one answers.

        Only retryable errors raised before any token arrived move on to the next
        endpoint; a `PartialFailure` or a non-retryable error propagates immediately,
        because another replica would either duplicate visible output or fail the same way.
        """
        if not self._endpoints:
            raise PoolUnavailable(message="no endpoints configured")
        candidates = [ep for ep in self.order(affinity_key) if ep.model == request.model]
        if not candidates:
            served = sorted({ep.model for ep in self._endpoints})
            raise PoolUnavailable(
                message=f"no endpoint serves model {request.model!r} (configured: {served})"
            )
        attempts: list[InferenceError] = []
        for endpoint in candidates:
            try:
                return self._client(endpoint).chat(request, stream=stream)
            except PartialFailure:
                raise
            except InferenceError as exc:
                if not exc.retryable:
                    raise
                logger.warning(
                    "endpoint %s failed (%s: %s); trying next",
                    endpoint.name,
                    type(exc).__name__,
                    exc.message,
                )
                attempts.append(exc)
        raise PoolUnavailable(attempts)

    def _client(self, endpoint: Endpoint) -> VLLMClient:
        with self._lock:
            client = self._clients.get(endpoint)
            if client is None:
                client = self._client_factory(endpoint)
                self._clients[endpoint] = client
            return client
