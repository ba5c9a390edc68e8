"""AdmissionController: per-endpoint budgets, a bounded queue served by priority and
round-robin across tenants, deadlines. Threads are coordinated with events and bounded
condition waits; grants are observed one at a time so their order is exact."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from inference import AdmissionController, Busy, Endpoint, Priority, RouteContext
from inference.admission import NoCandidates, Slot
from tests.inference.support import wait_until

JOIN_S = 10.0


def _endpoint(name: str = "ep", max_concurrency: int = 1) -> Endpoint:
    return Endpoint(
        name=name, url=f"http://{name}.test:8000", model="m", max_concurrency=max_concurrency
    )


class _Ranker:
    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        self.endpoints = list(endpoints)

    def __call__(self) -> Sequence[Endpoint]:
        return self.endpoints


def _ranker(*endpoints: Endpoint) -> _Ranker:
    return _Ranker(endpoints)


def _far() -> float:
    return time.monotonic() + 60.0


class _Requester(threading.Thread):
    """Acquires one slot on a thread; records it (or the error) and the grant order."""

    def __init__(
        self,
        controller: AdmissionController,
        ranker: _Ranker,
        ctx: RouteContext,
        label: str,
        granted: list[str],
        deadline: float | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.controller = controller
        self.ranker = ranker
        self.ctx = ctx
        self.label = label
        self.granted = granted
        self.deadline = deadline if deadline is not None else _far()
        self.slot: Slot | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.slot = self.controller.acquire(self.ranker, self.ctx, self.deadline)
            self.granted.append(self.label)
        except BaseException as exc:  # recorded for the test to assert on
            self.error = exc


def _enqueue(
    controller: AdmissionController,
    ranker: _Ranker,
    ctxs: Sequence[tuple[str, RouteContext]],
    granted: list[str],
) -> dict[str, _Requester]:
    """Start one requester per context, each only after the previous one is queued, so
    their arrival order is exactly the order given."""
    requesters: dict[str, _Requester] = {}
    for label, ctx in ctxs:
        before = controller.waiting
        requester = _Requester(controller, ranker, ctx, label, granted)
        requester.start()
        wait_until(lambda b=before: controller.waiting == b + 1, JOIN_S, f"{label} queued")
        requesters[label] = requester
    return requesters


def _drain_one_at_a_time(
    first: Slot, requesters: dict[str, _Requester], granted: list[str]
) -> list[str]:
    """Release the held slot; each grant's slot is released only after it is observed."""
    slot = first
    for step in range(1, len(requesters) + 1):
        slot.release()
        wait_until(lambda s=step: len(granted) == s, JOIN_S, f"grant {step}")
        requester = requesters[granted[-1]]
        requester.join(JOIN_S)
        assert requester.slot is not None
        slot = requester.slot
    slot.release()
    return list(granted)


def test_per_endpoint_budget_is_never_exceeded() -> None:
    big, small = _endpoint("big", max_concurrency=2), _endpoint("small", max_concurrency=1)
    controller = AdmissionController()
    ranker = _ranker(big, small)
    go = threading.Event()
    lock = threading.Lock()
    holding: dict[str, int] = {"big": 0, "small": 0}
    peak: dict[str, int] = {"big": 0, "small": 0}
    done: list[str] = []

    def work(i: int) -> None:
        slot = controller.acquire(ranker, RouteContext(tenant=f"t{i % 3}"), _far())
        name = slot.endpoint.name
        with lock:
            holding[name] += 1
            peak[name] = max(peak[name], holding[name])
        go.wait(JOIN_S)
        with lock:
            holding[name] -= 1
        slot.release()
        with lock:
            done.append(name)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(10)]
    for thread in threads:
        thread.start()
    wait_until(lambda: controller.waiting == 7, JOIN_S, "7 waiting")
    assert controller.in_flight(big) == 2
    assert controller.in_flight(small) == 1
    assert holding == {"big": 2, "small": 1}
    go.set()
    for thread in threads:
        thread.join(JOIN_S)
    assert len(done) == 10
    assert peak == {"big": 2, "small": 1}
    assert controller.in_flight_all() == {big.url: 0, small.url: 0}
    assert controller.waiting == 0


def test_priority_realtime_then_chat_then_batch_whatever_the_arrival_order() -> None:
    controller = AdmissionController()
    ranker = _ranker(_endpoint())
    held = controller.acquire(ranker, RouteContext(), _far())
    granted: list[str] = []
    requesters = _enqueue(
        controller,
        ranker,
        [
            ("batch", RouteContext(tenant="t", priority=Priority.BATCH)),
            ("chat", RouteContext(tenant="t", priority=Priority.CHAT)),
            ("realtime", RouteContext(tenant="t", priority=Priority.REALTIME)),
        ],
        granted,
    )
    assert controller.waiting_by_priority() == {"realtime": 1, "chat": 1, "batch": 1}
    assert _drain_one_at_a_time(held, requesters, granted) == ["realtime", "chat", "batch"]


def test_a_tenants_burst_does_not_starve_another_tenant_and_each_keeps_its_order() -> None:
    controller = AdmissionController()
    ranker = _ranker(_endpoint())
    held = controller.acquire(ranker, RouteContext(), _far())
    granted: list[str] = []
    burst = [(f"a{i}", RouteContext(tenant="A")) for i in range(20)]
    late = [(f"b{i}", RouteContext(tenant="B")) for i in range(2)]
    requesters = _enqueue(controller, ranker, burst + late, granted)
    order = _drain_one_at_a_time(held, requesters, granted)
    assert {"b0", "b1"} <= set(order[:4]), order
    # Within a tenant, first come first served.
    assert [g for g in order if g.startswith("a")] == [f"a{i}" for i in range(20)]
    assert [g for g in order if g.startswith("b")] == ["b0", "b1"]
    assert controller.waiting == 0


def test_a_full_queue_refuses_the_next_waiter_at_once() -> None:
    controller = AdmissionController(max_queue=2)
    ranker = _ranker(_endpoint())
    held = controller.acquire(ranker, RouteContext(), _far())
    granted: list[str] = []
    requesters = _enqueue(
        controller, ranker, [("q0", RouteContext()), ("q1", RouteContext())], granted
    )
    # Its deadline is a minute away: only a full queue can make it return promptly.
    third = _Requester(controller, ranker, RouteContext(), "q2", granted)
    third.start()
    third.join(JOIN_S)
    assert not third.is_alive()
    assert isinstance(third.error, Busy)
    assert controller.waiting == 2
    # The queued ones are still served.
    assert sorted(_drain_one_at_a_time(held, requesters, granted)) == ["q0", "q1"]


def test_a_waiter_whose_deadline_passes_gets_busy_and_leaves_the_queue() -> None:
    controller = AdmissionController()
    ranker = _ranker(_endpoint())
    held = controller.acquire(ranker, RouteContext(), _far())
    granted: list[str] = []
    patient = _enqueue(controller, ranker, [("patient", RouteContext(tenant="p"))], granted)
    impatient = _Requester(
        controller,
        ranker,
        RouteContext(tenant="i", priority=Priority.REALTIME),
        "impatient",
        granted,
        deadline=time.monotonic() + 0.2,
    )
    impatient.start()
    impatient.join(JOIN_S)
    assert isinstance(impatient.error, Busy)
    assert "deadline" in str(impatient.error)
    assert controller.waiting == 1
    assert controller.waiting_by_priority()["realtime"] == 0
    # The slot goes to the waiter that is still there, not to the departed one.
    assert _drain_one_at_a_time(held, patient, granted) == ["patient"]
    assert controller.in_flight_all() == {ranker.endpoints[0].url: 0}


def test_a_past_deadline_with_free_capacity_is_still_admitted() -> None:
    controller = AdmissionController()
    slot = controller.acquire(_ranker(_endpoint()), RouteContext(), time.monotonic() - 1.0)
    assert slot.waited_s >= 0.0
    slot.release()


def test_no_candidates_when_the_ranker_returns_nothing() -> None:
    controller = AdmissionController()
    with pytest.raises(NoCandidates):
        controller.acquire(_ranker(), RouteContext(), _far())
    assert controller.waiting == 0


def test_a_refused_claim_skips_that_endpoint() -> None:
    probing, healthy = _endpoint("probing"), _endpoint("healthy")
    controller = AdmissionController(claim=lambda endpoint: endpoint is not probing)
    slot = controller.acquire(_ranker(probing, healthy), RouteContext(), _far())
    assert slot.endpoint == healthy
    slot.release()


def test_releasing_a_slot_twice_frees_it_once() -> None:
    endpoint = _endpoint(max_concurrency=2)
    controller = AdmissionController()
    ranker = _ranker(endpoint)
    first = controller.acquire(ranker, RouteContext(), _far())
    second = controller.acquire(ranker, RouteContext(), _far())
    first.release()
    first.release()
    assert controller.in_flight(endpoint) == 1
    second.release()
    assert controller.in_flight(endpoint) == 0


def test_the_ranker_may_read_in_flight_counts_while_admission_holds_its_lock() -> None:
    # Pool.candidates does exactly this; with a non-reentrant lock it deadlocked.
    endpoint = _endpoint(max_concurrency=1)
    controller = AdmissionController()

    def ranker() -> Sequence[Endpoint]:
        return [endpoint] if controller.in_flight(endpoint) < 5 else []

    result: list[Slot] = []
    thread = threading.Thread(
        target=lambda: result.append(controller.acquire(ranker, RouteContext(), _far())),
        daemon=True,
    )
    thread.start()
    thread.join(JOIN_S)
    assert not thread.is_alive(), "acquire deadlocked"
    result[0].release()
