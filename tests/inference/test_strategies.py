"""Routing strategies: round robin, least loaded and session affinity with bounded loads."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from inference import (
    Candidate,
    Endpoint,
    LeastLoaded,
    RoundRobin,
    RouteContext,
    SessionAffinity,
    strategy_by_name,
)

KEYS = [f"tenant-1:conversation-{i}" for i in range(2000)]


def _endpoints(count: int) -> list[Endpoint]:
    return [Endpoint(name=f"ep{i}", url=f"http://10.0.0.{i}:8000", model="m") for i in range(count)]


def _idle(endpoints: Sequence[Endpoint]) -> list[Candidate]:
    return [Candidate(endpoint=e, in_flight=0) for e in endpoints]


def _first(strategy: SessionAffinity, endpoints: Sequence[Endpoint], key: str) -> str:
    return strategy.rank(_idle(endpoints), RouteContext(affinity_key=key))[0].endpoint.name


def _names(ranked: Sequence[Candidate]) -> list[str]:
    return [c.endpoint.name for c in ranked]


# -- round robin ----------------------------------------------------------------------------


def test_round_robin_rotates_the_first_choice_evenly() -> None:
    endpoints = _endpoints(3)
    strategy = RoundRobin()
    rankings = [_names(strategy.rank(_idle(endpoints), RouteContext())) for _ in range(300)]
    assert Counter(r[0] for r in rankings) == {"ep0": 100, "ep1": 100, "ep2": 100}
    # Every ranking still offers every endpoint for failover.
    assert all(sorted(r) == ["ep0", "ep1", "ep2"] for r in rankings)
    assert rankings[0][0] != rankings[1][0] != rankings[2][0]


def test_round_robin_of_nothing_is_nothing() -> None:
    assert RoundRobin().rank([], RouteContext()) == []


# -- least loaded ---------------------------------------------------------------------------


def test_least_loaded_orders_by_in_flight_plus_waiting_per_unit_of_weight() -> None:
    big, small, busy = _endpoints(3)
    big = dataclasses.replace(big, weight=2.0)
    candidates = [
        Candidate(endpoint=busy, in_flight=5),  # load 5
        Candidate(endpoint=small, in_flight=1, waiting=2.0),  # load 3
        Candidate(endpoint=big, in_flight=4),  # 4 requests over weight 2: load 2
    ]
    ranked = LeastLoaded().rank(candidates, RouteContext(affinity_key="ignored"))
    assert _names(ranked) == ["ep0", "ep1", "ep2"]


def test_least_loaded_counts_the_servers_own_queue() -> None:
    a, b = _endpoints(2)
    candidates = [Candidate(endpoint=a, in_flight=0, waiting=7.0), Candidate(b, in_flight=3)]
    assert _names(LeastLoaded().rank(candidates, RouteContext())) == ["ep1", "ep0"]


# -- session affinity -----------------------------------------------------------------------


def test_same_affinity_key_ranks_the_same_endpoint_first_on_every_call() -> None:
    endpoints = _endpoints(5)
    key = "tenant-1:conversation-42"
    first = _names(SessionAffinity().rank(_idle(endpoints), RouteContext(affinity_key=key)))
    for _ in range(3):
        again = SessionAffinity().rank(_idle(endpoints), RouteContext(affinity_key=key))
        assert _names(again) == first
    # Input order does not matter either.
    reversed_ = SessionAffinity().rank(_idle(endpoints[::-1]), RouteContext(affinity_key=key))
    assert _names(reversed_) == first
    assert sorted(first) == [e.name for e in endpoints]


def test_affinity_is_identical_in_another_process_with_a_different_hash_seed() -> None:
    endpoints = _endpoints(4)
    keys = KEYS[:50]
    script = (
        "import json, sys\n"
        "from inference import Candidate, Endpoint, RouteContext, SessionAffinity\n"
        "cands = [Candidate(Endpoint(**e), 0) for e in json.loads(sys.argv[1])]\n"
        "s = SessionAffinity()\n"
        "print(json.dumps([[c.endpoint.name for c in s.rank(cands, RouteContext(affinity_key=k))]"
        " for k in json.loads(sys.argv[2])]))\n"
    )
    arg = json.dumps([{"name": e.name, "url": e.url, "model": e.model} for e in endpoints])
    rankings = []
    for seed in ("1", "98765"):
        env = {
            **os.environ,
            "PYTHONHASHSEED": seed,
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        }
        out = subprocess.run(
            [sys.executable, "-c", script, arg, json.dumps(keys)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        rankings.append(json.loads(out))
    strategy = SessionAffinity()
    local = [_names(strategy.rank(_idle(endpoints), RouteContext(affinity_key=k))) for k in keys]
    assert rankings[0] == rankings[1] == local


def test_removing_an_endpoint_moves_only_the_keys_that_were_on_it() -> None:
    endpoints = _endpoints(5)
    removed = endpoints[2]
    survivors = [e for e in endpoints if e != removed]
    # One strategy per endpoint set, so neither rebuilds its ring on every call.
    full, reduced = SessionAffinity(), SessionAffinity()
    moved = 0
    for key in KEYS:
        before = _first(full, endpoints, key)
        after = _first(reduced, survivors, key)
        if before != removed.name:
            assert after == before, key
        else:
            moved += 1
    assert moved > 0


def test_adding_an_endpoint_moves_about_one_in_n_keys_and_only_onto_it() -> None:
    before, after = _endpoints(4), _endpoints(5)
    small, large = SessionAffinity(), SessionAffinity()
    moved = Counter(
        new for key in KEYS if _first(small, before, key) != (new := _first(large, after, key))
    )
    assert set(moved) == {"ep4"}
    # Ideal share is 1/5 = 400 of 2000 keys; allow for the ring's granularity.
    assert 0.10 * len(KEYS) < moved["ep4"] < 0.30 * len(KEYS)


def test_keys_spread_over_all_endpoints() -> None:
    endpoints = _endpoints(4)
    strategy = SessionAffinity()
    firsts = Counter(_first(strategy, endpoints, key) for key in KEYS)
    assert set(firsts) == {e.name for e in endpoints}
    # No endpoint gets fewer than half, or more than twice, its fair share (500).
    assert all(250 < n < 1000 for n in firsts.values()), firsts


def test_an_endpoint_of_weight_two_gets_about_twice_the_keys() -> None:
    heavy, *light = _endpoints(3)
    endpoints = [dataclasses.replace(heavy, weight=2.0), *light]
    strategy = SessionAffinity()
    firsts = Counter(_first(strategy, endpoints, key) for key in KEYS)
    per_light = (firsts["ep1"] + firsts["ep2"]) / 2
    assert 1.5 < firsts["ep0"] / per_light < 2.6, firsts


def test_a_home_endpoint_at_its_load_bound_spills_to_the_next_one_on_the_ring() -> None:
    endpoints = _endpoints(3)
    strategy = SessionAffinity(epsilon=0.25)
    key = KEYS[7]
    ctx = RouteContext(affinity_key=key)
    home, ring_next, ring_last = strategy.ring_order(_idle(endpoints), key)

    def rank(loads: dict[Endpoint, int]) -> list[str]:
        ring = (home, ring_next, ring_last)
        candidates = [Candidate(endpoint=c.endpoint, in_flight=loads[c.endpoint]) for c in ring]
        return _names(strategy.rank(candidates, ctx))

    # Total load 5 + 1 (this request) over 3 equal endpoints: bound ceil(1.25 * 6 / 3) = 3.
    # Home has 4: one more would exceed it. The next one on the ring (load 1) is preferred
    # to the least-loaded one (load 0): spilling keeps the order other keys also see.
    spilled = rank({home.endpoint: 4, ring_next.endpoint: 1, ring_last.endpoint: 0})
    assert spilled == [ring_next.endpoint.name, ring_last.endpoint.name, home.endpoint.name]

    # Home's load drops (1 of a total 2 + 1, bound ceil(1.25) = 2): the key goes home.
    back = rank({home.endpoint: 1, ring_next.endpoint: 1, ring_last.endpoint: 0})
    assert back[0] == home.endpoint.name


def test_the_servers_own_queue_counts_towards_the_load_bound() -> None:
    endpoints = _endpoints(2)
    strategy = SessionAffinity(epsilon=0.25)
    key = KEYS[3]
    home, other = strategy.ring_order(_idle(endpoints), key)
    candidates = [
        Candidate(endpoint=home.endpoint, in_flight=0, waiting=10.0),
        Candidate(endpoint=other.endpoint, in_flight=0),
    ]
    ranked = strategy.rank(candidates, RouteContext(affinity_key=key))
    assert _names(ranked) == [other.endpoint.name, home.endpoint.name]


def test_admission_waits_for_the_home_endpoint_while_it_is_within_the_bound() -> None:
    endpoints = _endpoints(4)
    strategy = SessionAffinity(epsilon=0.25)
    key = KEYS[11]
    ctx = RouteContext(affinity_key=key)
    home, *others = strategy.ring_order(_idle(endpoints), key)

    def admissible(home_load: int, other_load: int) -> list[str]:
        candidates = [Candidate(endpoint=home.endpoint, in_flight=home_load)] + [
            Candidate(endpoint=o.endpoint, in_flight=other_load) for o in others
        ]
        return _names(strategy.admissible(strategy.rank(candidates, ctx), ctx))

    # A saturated pool, loads even (32 each; bound ceil(1.25 * 129 / 4) = 41): the request
    # waits for its own endpoint instead of taking a slot where nothing of it is cached.
    assert admissible(32, 32) == [home.endpoint.name]
    # Home far above the others (bound ceil(1.25 * 63 / 4) = 20): patience ends and the
    # next endpoint on the ring may take it.
    assert admissible(32, 10) == [others[0].endpoint.name]
    # The full ranking, for failover and for the impatient variant, is unchanged.
    impatient = SessionAffinity(epsilon=0.25, patient=False)
    candidates = [Candidate(endpoint=c.endpoint, in_flight=32) for c in (home, *others)]
    assert len(impatient.admissible(impatient.rank(candidates, ctx), ctx)) == 4


def test_admissible_without_an_affinity_key_is_the_whole_ranking() -> None:
    candidates = _idle(_endpoints(3))
    strategy = SessionAffinity()
    ranked = strategy.rank(candidates, RouteContext())
    assert strategy.admissible(ranked, RouteContext()) == ranked


def test_empty_affinity_key_falls_back_to_least_loaded() -> None:
    a, b, c = _endpoints(3)
    candidates = [Candidate(a, in_flight=3), Candidate(b, in_flight=0), Candidate(c, in_flight=1)]
    ranked = SessionAffinity().rank(candidates, RouteContext(affinity_key=""))
    assert _names(ranked) == ["ep1", "ep2", "ep0"]


def test_session_affinity_of_nothing_is_nothing() -> None:
    assert SessionAffinity().rank([], RouteContext(affinity_key="k")) == []


# -- by name --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("round_robin", RoundRobin),
        ("least_loaded", LeastLoaded),
        ("session_affinity", SessionAffinity),
    ],
)
def test_strategy_by_name_builds_a_fresh_strategy(name: str, kind: type) -> None:
    strategy = strategy_by_name(name)
    assert isinstance(strategy, kind)
    assert strategy.name == name
    assert strategy_by_name(name) is not strategy


def test_unknown_strategy_name_is_a_clear_error_listing_the_choices() -> None:
    with pytest.raises(ValueError) as caught:
        strategy_by_name("fastest")
    message = str(caught.value)
    assert "'fastest'" in message
    for known in ("least_loaded", "round_robin", "session_affinity"):
        assert known in message
