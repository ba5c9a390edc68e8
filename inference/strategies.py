"""Routing strategies: given the endpoints that may take a request now, in what order
should they be tried? One small interface, one class per strategy.

The first endpoint is the choice; the rest are the failover order.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from inference.types import Endpoint, RouteContext


@dataclass(frozen=True)
class Candidate:
    """An endpoint as routing sees it at this instant."""

    endpoint: Endpoint
    in_flight: int  # requests this process has outstanding there
    waiting: float = 0.0  # the server's own queue, from its last metrics scrape
    kv_cache_usage: float = 0.0

    @property
    def load(self) -> float:
        return (self.in_flight + self.waiting) / max(self.endpoint.weight, 1e-9)


class RoutingStrategy(Protocol):
    name: str

    def rank(self, candidates: Sequence[Candidate], ctx: RouteContext) -> list[Candidate]: ...


def admissible(
    strategy: RoutingStrategy, ranked: Sequence[Candidate], ctx: RouteContext
) -> list[Candidate]:
    """The endpoints of `ranked` that admission may grant now; all of them unless the
    strategy narrows the choice (`SessionAffinity.admissible`)."""
    narrow = getattr(strategy, "admissible", None)
    return list(ranked) if narrow is None else narrow(ranked, ctx)


class RoundRobin:
    """Spread requests evenly, ignoring load and conversations."""

    name = "round_robin"

    def __init__(self) -> None:
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def rank(self, candidates: Sequence[Candidate], ctx: RouteContext) -> list[Candidate]:
        if not candidates:
            return []
        ordered = sorted(candidates, key=lambda c: c.endpoint.url)
        with self._lock:
            start = next(self._counter) % len(ordered)
        return ordered[start:] + ordered[:start]


class LeastLoaded:
    """Send each request where the fewest requests (ours in flight plus the server's
    waiting queue, per unit of weight) are."""

    name = "least_loaded"

    def rank(self, candidates: Sequence[Candidate], ctx: RouteContext) -> list[Candidate]:
        return sorted(candidates, key=lambda c: (c.load, c.kv_cache_usage, c.endpoint.url))


_RING_CACHE_SIZE = 64


def _hash64(value: str) -> int:
    # hashlib, not hash(): str hashing is salted per process, and every worker must agree.
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "big")


class SessionAffinity:
    """Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam, 2018).

    A conversation's key hashes onto a ring of virtual nodes (more for heavier
    endpoints), so every turn lands on the endpoint whose KV cache holds the
    conversation's prefix, and adding or removing an endpoint moves only the keys next
    to it. No endpoint may exceed `(1 + epsilon)` times the average load: when the home
    endpoint is at that bound, the request spills over to the next one along the ring,
    which keeps one hot tenant from melting one GPU.
    """

    name = "session_affinity"

    def __init__(self, *, epsilon: float = 0.25, vnodes: int = 64, patient: bool = True) -> None:
        self.epsilon = epsilon
        self.vnodes = vnodes
        # See `admissible`: wait for the key's endpoint while it is within the bound.
        self.patient = patient
        # One ring per candidate set (a pool serving several models, endpoints failing
        # over): a few are kept so alternating sets do not rebuild on every request.
        self._rings: OrderedDict[tuple[str, ...], tuple[list[int], list[str]]] = OrderedDict()
        self._lock = threading.Lock()

    def _ring(self, endpoints: Sequence[Endpoint]) -> tuple[list[int], list[str]]:
        key = tuple(sorted(f"{e.url}|{e.weight}" for e in endpoints))
        with self._lock:
            ring = self._rings.get(key)
            if ring is not None:
                self._rings.move_to_end(key)
                return ring
            points: list[tuple[int, str]] = []
            for endpoint in endpoints:
                count = max(1, round(self.vnodes * endpoint.weight))
                points.extend((_hash64(f"{endpoint.url}#{i}"), endpoint.url) for i in range(count))
            points.sort()
            ring = ([p[0] for p in points], [p[1] for p in points])
            self._rings[key] = ring
            if len(self._rings) > _RING_CACHE_SIZE:
                self._rings.popitem(last=False)
            return ring

    def ring_order(self, candidates: Sequence[Candidate], key: str) -> list[Candidate]:
        """Candidates in the order the key meets them walking clockwise round the ring."""
        by_url = {c.endpoint.url: c for c in candidates}
        hashes, urls = self._ring([c.endpoint for c in candidates])
        start = bisect.bisect(hashes, _hash64(key))
        order: list[Candidate] = []
        seen: set[str] = set()
        for offset in range(len(urls)):
            url = urls[(start + offset) % len(urls)]
            if url not in seen:
                seen.add(url)
                order.append(by_url[url])
                if len(order) == len(by_url):
                    break
        return order

    def rank(self, candidates: Sequence[Candidate], ctx: RouteContext) -> list[Candidate]:
        if not candidates:
            return []
        if not ctx.affinity_key:
            return LeastLoaded().rank(candidates, ctx)
        within, over = self._split(candidates, ctx.affinity_key)
        return within + sorted(over, key=lambda c: c.load)

    def admissible(self, ranked: Sequence[Candidate], ctx: RouteContext) -> list[Candidate]:
        """Of `rank`'s order, the endpoints admission may grant this request now.

        Only the first one within the load bound: while the key's endpoint is within the
        bound the request waits for a slot *there*, rather than taking a free slot on an
        endpoint that has none of its prefix cached. Without this, a saturated pool hands
        every freed slot to whoever waits, affinity dissolves exactly when the GPUs are
        busiest, every spilled request recomputes its whole history, and the extra
        prefill pushes the pool further past its capacity. The bound still moves a
        key whose endpoint is more than (1 + epsilon) times the average: patience ends
        where the imbalance starts. Failover re-ranks without the failed endpoint, so
        the next one along the ring takes over.
        """
        if not self.patient or not ctx.affinity_key or not ranked:
            return list(ranked)
        within, over = self._split(ranked, ctx.affinity_key)
        return within[:1] if within else sorted(over, key=lambda c: c.load)

    def _split(
        self, candidates: Sequence[Candidate], key: str
    ) -> tuple[list[Candidate], list[Candidate]]:
        """Candidates in ring order, split by whether one more request keeps them within
        the bound."""
        order = self.ring_order(candidates, key)
        total_weight = sum(c.endpoint.weight for c in candidates)
        # +1: the request being placed counts towards the load it must fit under.
        total_load = sum(c.in_flight + c.waiting for c in candidates) + 1
        within: list[Candidate] = []
        over: list[Candidate] = []
        for candidate in order:
            bound = math.ceil(
                (1 + self.epsilon) * total_load * candidate.endpoint.weight / total_weight
            )
            (within if candidate.in_flight + candidate.waiting + 1 <= bound else over).append(
                candidate
            )
        return within, over


STRATEGIES: dict[str, type[RoundRobin] | type[LeastLoaded] | type[SessionAffinity]] = {
    RoundRobin.name: RoundRobin,
    LeastLoaded.name: LeastLoaded,
    SessionAffinity.name: SessionAffinity,
}


def strategy_by_name(name: str) -> RoutingStrategy:
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise ValueError(
            f"unknown routing strategy {name!r}; choose one of {sorted(STRATEGIES)}"
        ) from None
