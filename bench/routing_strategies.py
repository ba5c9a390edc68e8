"""Routing strategies under a multi-turn, multi-tenant chat workload on four simulators.

Four `python -m inference.simulator` processes (one per "GPU") serve a pool driven by an
open-loop (Poisson) stream of chat turns. Tenants have their own long system prompts;
conversations grow turn by turn (each turn carries the previous user messages and
replies), so a conversation's next turn can reuse the KV-cache prefix its previous turn
left behind, but only on the endpoint that served it and only if that endpoint has not
evicted it since. For every strategy and offered rate the script reports goodput
(requests whose TTFT meets the objective, per modelled second), TTFT percentiles, the
prefix-cache hit rate from the simulators' /metrics, and Jain's fairness index across
tenants. The simulators are restarted for every (rate, strategy) cell, so each starts
with clean caches, and every strategy gets the identical seeded workload.

Times: the simulators run with ``--time-scale``; arrivals, think times and TTFTs are
*modelled* seconds (wall seconds divided by the time scale) unless a column says wall.
TTFT is measured by the client, from the request's scheduled arrival to its first
content token, so pool queueing, HTTP and server queueing all count.

Run ``python -m bench.routing_strategies --help`` for the knobs.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import random
import string
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import httpx

from bench._sim import (
    Simulator,
    command_line,
    jain,
    percentile,
    scrape_counters,
    sigterm_as_exit,
    simulators,
    stop_simulators,
    table,
)
from inference import (
    ChatRequest,
    Endpoint,
    InferenceError,
    Pool,
    RouteContext,
    RoutingStrategy,
    SessionAffinity,
    Timeouts,
    TokenDelta,
    strategy_by_name,
)
from inference.simulator.reply import natural_reply
from inference.simulator.tokens import count_prompt_tokens, render_chatml, tokenize

MODEL = "Qwen/Qwen-7B-Chat"
STRATEGIES = ("round_robin", "least_loaded", "session_affinity")
_HITS = "vllm:prefix_cache_hits_total"
_QUERIES = "vllm:prefix_cache_queries_total"
_PREEMPTIONS = "vllm:num_preemptions_total"
_TTFT_SUM = "vllm:time_to_first_token_seconds_sum"
_TTFT_COUNT = "vllm:time_to_first_token_seconds_count"


# -- settings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    endpoints: int
    max_num_seqs: int
    kv_blocks: int
    block_size: int
    max_model_len: int
    time_scale: float
    prefill_ms_per_token: float
    reply_min_tokens: int
    reply_max_tokens: int
    max_tokens: int
    max_concurrency: int
    epsilon: float
    tenants: int
    tenant_skew: float
    system_min_tokens: int
    system_max_tokens: int
    user_min_tokens: int
    user_max_tokens: int
    min_turns: int
    max_turns: int
    think_s: float
    min_gap_s: float
    warmup_s: float
    window_s: float
    ttft_cap_s: float
    slo_s: float
    seed: int

    def simulator_args(self) -> list[str]:
        return [
            "--prefill-ms-per-token",
            repr(self.prefill_ms_per_token),
            "--max-num-seqs",
            str(self.max_num_seqs),
            "--kv-blocks",
            str(self.kv_blocks),
            "--block-size",
            str(self.block_size),
            "--max-model-len",
            str(self.max_model_len),
            "--time-scale",
            repr(self.time_scale),
            "--reply-min-tokens",
            str(self.reply_min_tokens),
            "--reply-max-tokens",
            str(self.reply_max_tokens),
        ]


# -- workload -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tenant:
    name: str
    system_prompt: str
    weight: float


@dataclass(frozen=True)
class Arrival:
    at_s: float  # modelled seconds from the start of the run
    tenant: str
    conversation: str
    turn: int
    messages: tuple[dict[str, str], ...]


@dataclass
class _Conversation:
    key: str
    tenant: Tenant
    turns: int
    history: list[dict[str, str]]
    done: int = 0
    last_at: float = -math.inf


class Words:
    """Pseudo-words: the simulator's tokenizer counts one token per word."""

    def __init__(self, rng: random.Random, size: int = 2000) -> None:
        letters = string.ascii_lowercase
        self._rng = rng
        self._vocabulary = [
            "".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(size)
        ]

    def text(self, count: int) -> str:
        words = [self._rng.choice(self._vocabulary) for _ in range(count)]
        return " ".join(words)


def make_tenants(settings: Settings, rng: random.Random, words: Words) -> list[Tenant]:
    # Tenant i offers load proportional to skew**i: a few big tenants and a long tail.
    tenants = []
    for index in range(settings.tenants):
        length = rng.randint(settings.system_min_tokens, settings.system_max_tokens)
        name = f"tenant-{index + 1}"
        prompt = f"You are the assistant of {name}. " + words.text(length - 8)
        tenants.append(Tenant(name, prompt, settings.tenant_skew**index))
    return tenants


def make_workload(settings: Settings, rate: float) -> tuple[list[Tenant], list[Arrival]]:
    """The seeded arrivals for one offered rate (requests per modelled second).

    Arrivals are a Poisson stream at `rate` (see `_poisson_times`). A fixed population of
    `rate * think_s` active conversations sends them, each turn by one conversation chosen
    at random (so each is roughly a Poisson source with mean gap `think_s`), skipping
    conversations whose previous turn is less than `min_gap_s` old (a person reads the
    reply before typing). A finished conversation is replaced by a new one of a tenant
    drawn by weight. The conversations present at the start begin part-way through
    (their earlier turns exist but are not cached anywhere), so the history mix is
    already in steady state; the warm-up fills the caches.
    """
    # Seeded on purpose: every strategy must see the same workload.
    rng = random.Random(settings.seed)  # noqa: S311
    words = Words(rng)
    tenants = make_tenants(settings, rng, words)
    weights = [t.weight for t in tenants]
    serial = 0

    def user_text(key: str) -> str:
        count = rng.randint(settings.user_min_tokens, settings.user_max_tokens)
        return f"[{key}] " + words.text(max(1, count - 4))

    def reply_text() -> str:
        return words.text(rng.randint(settings.reply_min_tokens, settings.reply_max_tokens))

    def new_conversation(existing_turns: int) -> _Conversation:
        nonlocal serial
        serial += 1
        tenant = rng.choices(tenants, weights)[0]
        key = f"c{serial}"
        turns = rng.randint(settings.min_turns, settings.max_turns)
        history: list[dict[str, str]] = [{"role": "system", "content": tenant.system_prompt}]
        done = min(existing_turns, turns - 1)
        for _ in range(done):
            history.append({"role": "user", "content": user_text(key)})
            history.append({"role": "assistant", "content": reply_text()})
        return _Conversation(key, tenant, turns, history, done=done)

    population = max(1, round(rate * settings.think_s))
    active = [new_conversation(rng.randint(0, settings.max_turns - 1)) for _ in range(population)]
    arrivals: list[Arrival] = []
    for now in _poisson_times(rng, rate, settings.warmup_s, settings.window_s):
        ready = [i for i, c in enumerate(active) if now - c.last_at >= settings.min_gap_s]
        if ready:
            index = rng.choice(ready)
        else:
            index = min(range(len(active)), key=lambda i: active[i].last_at)
        conversation = active[index]
        conversation.history.append({"role": "user", "content": user_text(conversation.key)})
        arrivals.append(
            Arrival(
                at_s=now,
                tenant=conversation.tenant.name,
                conversation=conversation.key,
                turn=conversation.done + 1,
                messages=tuple(conversation.history),
            )
        )
        conversation.history.append({"role": "assistant", "content": reply_text()})
        conversation.done += 1
        conversation.last_at = now
        if conversation.done >= conversation.turns:
            active[index] = new_conversation(0)
    return tenants, arrivals


def _poisson_times(
    rng: random.Random, rate: float, warmup_s: float, window_s: float
) -> list[float]:
    """Poisson arrival times, conditioned on exactly `rate * duration` arrivals in the
    warm-up and in the window: given its count, a Poisson process's times are uniform
    order statistics. Fixing the counts keeps the offered load of every cell on target
    instead of a few per cent off by chance."""
    times: list[float] = []
    for start, length in ((0.0, warmup_s), (warmup_s, window_s)):
        count = round(rate * length)
        times.extend(sorted(start + rng.random() * length for _ in range(count)))
    return times


@dataclass(frozen=True)
class WorkloadStats:
    requests: int
    mean_prompt_tokens: float
    mean_new_tokens: float  # prompt tokens not in the same conversation's previous prompt
    mean_output_tokens: float
    working_set_tokens: float  # distinct prompt tokens of the active conversations
    conversations: int
    # Prefix-cache hit rates of the measured requests with an unbounded cache: if every
    # turn found its conversation's previous prompt (perfect affinity), and if only the
    # tenants' shared system prompts were ever found (no affinity at all).
    ideal_hit: float
    system_only_hit: float

    def service_ms(self, settings: Settings, sim_defaults: SimDefaults, *, cached: bool) -> float:
        """Modelled batch-slot time per request when every endpoint runs a full batch.

        The simulator runs vLLM-like engine steps: each step decodes one token for every
        running sequence and spends the rest of its budget on prefill chunks, and its
        duration grows with both. In steady state a full batch of S sequences emits S
        tokens per step, so each request holds its slot for `output` steps, and the
        prefill of the S/output requests admitted per step is paid inside those steps.
        """
        uncached = self.mean_new_tokens if cached else self.mean_prompt_tokens
        seqs = settings.max_num_seqs
        outputs = max(1.0, self.mean_output_tokens)
        step = (
            sim_defaults.step_base_ms
            + sim_defaults.decode_ms_per_seq * seqs
            + settings.prefill_ms_per_token * uncached * seqs / outputs
        )
        return step * outputs


@dataclass(frozen=True)
class SimDefaults:
    """The simulator's default step costs (see its --help); prefill can be changed here."""

    step_base_ms: float = 10.0
    prefill_ms_per_token: float = 0.05
    decode_ms_per_seq: float = 0.1


def workload_stats(
    settings: Settings, tenants: Sequence[Tenant], arrivals: Sequence[Arrival], population: int
) -> WorkloadStats:
    system_tokens = {
        t.name: count_prompt_tokens([{"role": "system", "content": t.system_prompt}])
        for t in tenants
    }
    prompt_tokens: list[int] = []
    new_tokens: list[int] = []
    own_tokens: list[int] = []
    outputs: list[int] = []
    previous: dict[str, int] = {}
    last_pieces: dict[str, list[str]] = {}  # by conversation, then by tenant
    queried = ideal = system_only = 0
    for arrival in arrivals:
        pieces = tokenize(render_chatml(arrival.messages))
        tokens = len(pieces)
        if arrival.at_s >= settings.warmup_s:
            own = _hit(pieces, last_pieces.get(arrival.conversation), settings.block_size)
            shared = _hit(pieces, last_pieces.get(arrival.tenant), settings.block_size)
            queried += tokens
            ideal += max(own, shared)
            system_only += shared
        last_pieces[arrival.conversation] = last_pieces[arrival.tenant] = pieces
        prompt_tokens.append(tokens)
        # The previous turn's prompt is a prefix of this one up to its generation prompt.
        new_tokens.append(tokens - previous.get(arrival.conversation, 0))
        previous[arrival.conversation] = tokens
        own_tokens.append(tokens - system_tokens[arrival.tenant])
        reply = natural_reply(
            MODEL,
            "sim-1",
            arrival.messages,
            seed=0,
            temperature=0.0,
            min_tokens=settings.reply_min_tokens,
            max_tokens=settings.reply_max_tokens,
        )
        outputs.append(min(len(reply), settings.max_tokens))
    n = max(1, len(arrivals))
    return WorkloadStats(
        requests=len(arrivals),
        mean_prompt_tokens=sum(prompt_tokens) / n,
        mean_new_tokens=sum(new_tokens) / n,
        mean_output_tokens=sum(outputs) / n,
        # Live conversations times their own (non-system) history, plus each tenant's
        # system prompt once: what a cache would need to serve every turn from cache.
        working_set_tokens=population * sum(own_tokens) / n + sum(system_tokens.values()),
        conversations=population,
        ideal_hit=ideal / queried if queried else math.nan,
        system_only_hit=system_only / queried if queried else math.nan,
    )


def _hit(pieces: Sequence[str], cached: Sequence[str] | None, block_size: int) -> int:
    """Tokens a cache holding `cached` would serve: whole blocks, never the last token."""
    if not cached:
        return 0
    common = 0
    for mine, theirs in zip(pieces, cached, strict=False):
        if mine != theirs:
            break
        common += 1
    return min(common, len(pieces) - 1) // block_size * block_size


# -- one run --------------------------------------------------------------------------------


@dataclass
class Record:
    arrival: Arrival
    due: float  # wall clock (perf_counter) the request was scheduled for
    started: float = math.nan  # when its thread began
    first: float | None = None
    error: str = ""
    # `error` as it stood when the run was judged: closing the pool afterwards breaks
    # streams still decoding, which says nothing about their TTFT.
    judged_error: str = ""


@dataclass
class CellResult:
    strategy: str
    rate: float
    measured: list[Record]
    counters_before: dict[str, dict[str, float]]
    counters_after: dict[str, dict[str, float]]
    client_cpu_s: float
    sims_cpu_s: float
    wall_s: float
    settings: Settings
    tenants: list[str] = field(default_factory=list)

    def ttft_s(self, record: Record) -> float:
        """Modelled TTFT; inf when no first token came within the cap."""
        if record.first is None:
            return math.inf
        return (record.first - record.due) / self.settings.time_scale

    def good(self, slo_s: float) -> list[Record]:
        return [r for r in self.measured if not r.judged_error and self.ttft_s(r) <= slo_s]

    def goodput(self, slo_s: float) -> float:
        return len(self.good(slo_s)) / self.settings.window_s

    def ttfts(self) -> list[float]:
        return [self.ttft_s(r) for r in self.measured]

    def delta(self, name: str) -> float:
        return sum(
            self.counters_after[url].get(name, 0.0) - self.counters_before[url].get(name, 0.0)
            for url in self.counters_after
        )

    def hit_rate(self) -> float:
        queries = self.delta(_QUERIES)
        return self.delta(_HITS) / queries if queries else math.nan

    def fairness(self, slo_s: float) -> float:
        offered = Counter(r.arrival.tenant for r in self.measured)
        good = Counter(r.arrival.tenant for r in self.good(slo_s))
        return jain([good[t] / offered[t] for t in self.tenants if offered[t]])

    def endpoint_imbalance(self) -> float:
        """First tokens served by the busiest endpoint over the mean per endpoint."""
        counts = [
            self.counters_after[url].get(_TTFT_COUNT, 0.0)
            - self.counters_before[url].get(_TTFT_COUNT, 0.0)
            for url in self.counters_after
        ]
        mean = sum(counts) / len(counts) if counts else 0.0
        return max(counts) / mean if mean else math.nan

    def server_ttft_s(self) -> float:
        """Mean TTFT the simulators themselves recorded (modelled: queue + prefill)."""
        count = self.delta(_TTFT_COUNT)
        return self.delta(_TTFT_SUM) / count if count else math.nan

    def censored(self) -> int:
        return sum(1 for r in self.measured if r.first is None)


def make_strategy(name: str, settings: Settings) -> RoutingStrategy:
    """A strategy by name. ``session_affinity:EPS`` overrides the bounded-load epsilon;
    a ``/impatient`` suffix lets admission spill to any endpoint with a free slot (the
    behaviour before `SessionAffinity.admissible`)."""
    spec, _, mode = name.partition("/")
    base, _, epsilon = spec.partition(":")
    if base == "session_affinity":
        return SessionAffinity(
            epsilon=float(epsilon) if epsilon else settings.epsilon,
            patient=mode != "impatient",
        )
    return strategy_by_name(base)


def run_cell(
    settings: Settings,
    strategy: str,
    rate: float,
    tenants: Sequence[Tenant],
    arrivals: Sequence[Arrival],
) -> CellResult:
    ts = settings.time_scale
    threads: list[threading.Thread] = []
    with simulators(settings.endpoints, settings.simulator_args()) as sims:
        endpoints = [
            Endpoint(s.name, s.url, MODEL, max_concurrency=settings.max_concurrency) for s in sims
        ]
        # Wall-clock budgets generous enough never to cut a request inside the window.
        cap_wall = settings.ttft_cap_s * ts
        timeouts = Timeouts(connect=5.0, first_token=cap_wall + 5.0, total=cap_wall + 60.0)
        deadline_s = cap_wall + 30.0 * ts + 2.0
        with (
            Pool(
                endpoints,
                strategy=make_strategy(strategy, settings),
                timeouts=timeouts,
                max_queue=100_000,
            ) as pool,
            httpx.Client(timeout=10.0) as http,
        ):
            result = _drive(
                settings, strategy, rate, tenants, arrivals, sims, pool, http, deadline_s, threads
            )
            # Stop the servers before closing the pool: requests still queued in admission
            # then fail fast instead of reaching a server after the measurement.
            stop_simulators(sims)
    give_up = time.perf_counter() + deadline_s
    for thread in threads:
        thread.join(timeout=max(0.0, give_up - time.perf_counter()))
    stragglers = sum(1 for t in threads if t.is_alive())
    if stragglers:
        print(f"warning: {stragglers} request threads still running", file=sys.stderr)
    return result


def _drive(
    settings: Settings,
    strategy: str,
    rate: float,
    tenants: Sequence[Tenant],
    arrivals: Sequence[Arrival],
    sims: Sequence[Simulator],
    pool: Pool,
    http: httpx.Client,
    deadline_s: float,
    threads: list[threading.Thread],
) -> CellResult:
    ts = settings.time_scale
    records: list[Record] = []
    counters_before: dict[str, dict[str, float]] = {}

    def scrape_before() -> None:
        for sim in sims:
            counters_before[sim.url] = scrape_counters(http, sim.url)

    cpu0 = time.process_time()
    sims_cpu0 = sum(s.cpu_seconds() for s in sims)
    start = time.perf_counter() + 0.1
    window_start = start + settings.warmup_s * ts
    scraper = threading.Timer(max(0.0, window_start - time.perf_counter()), scrape_before)
    scraper.daemon = True
    scraper.start()
    request = ChatRequest(model=MODEL, messages=(), max_tokens=settings.max_tokens, temperature=0)
    for arrival in arrivals:
        due = start + arrival.at_s * ts
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        record = Record(arrival=arrival, due=due)
        records.append(record)
        thread = threading.Thread(
            target=_send_with,
            args=(pool, record, deadline_s, request),
            daemon=True,
        )
        thread.start()
        threads.append(thread)
    last_due = start + settings.warmup_s * ts + settings.window_s * ts
    # Every measured request is decided once it has a first token or waited past the cap.
    measured = [r for r in records if r.arrival.at_s >= settings.warmup_s]
    cap_wall = settings.ttft_cap_s * ts
    while time.perf_counter() < last_due + cap_wall:
        if all(r.first is not None or r.error for r in measured):
            break
        time.sleep(0.02)
    for record in measured:
        record.judged_error = record.error
    scraper.join()
    counters_after = {sim.url: scrape_counters(http, sim.url) for sim in sims}
    wall = time.perf_counter() - start
    return CellResult(
        strategy=strategy,
        rate=rate,
        measured=measured,
        counters_before=counters_before,
        counters_after=counters_after,
        client_cpu_s=time.process_time() - cpu0,
        sims_cpu_s=sum(s.cpu_seconds() for s in sims) - sims_cpu0,
        wall_s=wall,
        settings=settings,
        tenants=[t.name for t in tenants],
    )


def _send_with(pool: Pool, record: Record, deadline_s: float, template: ChatRequest) -> None:
    record.started = time.perf_counter()
    arrival = record.arrival
    request = ChatRequest(
        model=template.model,
        messages=arrival.messages,
        max_tokens=template.max_tokens,
        temperature=template.temperature,
    )
    ctx = RouteContext(
        affinity_key=arrival.conversation, tenant=arrival.tenant, deadline_s=deadline_s
    )
    try:
        for item in pool.stream(request, ctx):
            if isinstance(item, TokenDelta) and record.first is None:
                record.first = time.perf_counter()
    except InferenceError as exc:
        record.error = type(exc).__name__
    except Exception as exc:  # e.g. the pool closed under a straggler at the end of a run
        record.error = type(exc).__name__


# -- reporting ------------------------------------------------------------------------------


def _fmt_s(value: float, censored: bool = False) -> str:
    if math.isinf(value):
        return "inf"
    return (">" if censored else "") + f"{value:.3f}"


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else ("inf" if a else "n/a")


def _ttft_cell(result: CellResult, q: float) -> str:
    values = result.ttfts()
    value = percentile([v if math.isfinite(v) else 1e18 for v in values], q)
    if value >= 1e17 or value > result.settings.ttft_cap_s:
        return f">{result.settings.ttft_cap_s:g}"
    return _fmt_s(value)


def results_table(results: Sequence[CellResult], settings: Settings, extra_slo: float) -> str:
    headers = [
        "offered/s",
        "strategy",
        "goodput/s",
        "good %",
        f"goodput/s@{extra_slo:g}s",
        "TTFT p50 s",
        "TTFT p99 s",
        "TTFT p50 wall ms",
        "server TTFT mean s",
        "prefix hit %",
        "Jain",
        "busiest/mean",
        "preempt",
        "CPU % client+sims",
        "start lag p99 ms",
    ]
    rows = []
    cores = _cores()
    for r in results:
        ttfts = r.ttfts()
        p50 = percentile([v if math.isfinite(v) else 1e18 for v in ttfts], 50)
        rows.append(
            [
                f"{len(r.measured) / settings.window_s:.1f}",
                r.strategy,
                f"{r.goodput(settings.slo_s):.2f}",
                f"{100 * len(r.good(settings.slo_s)) / max(1, len(r.measured)):.1f}",
                f"{r.goodput(extra_slo):.2f}",
                _ttft_cell(r, 50),
                _ttft_cell(r, 99),
                f"{p50 * settings.time_scale * 1000:.0f}" if p50 < 1e17 else "n/a",
                _fmt_s(r.server_ttft_s()),
                _pct(r.hit_rate()),
                "n/a" if math.isnan(f := r.fairness(settings.slo_s)) else f"{f:.3f}",
                f"{r.endpoint_imbalance():.2f}",
                f"{r.delta(_PREEMPTIONS):.0f}",
                f"{100 * r.client_cpu_s / (r.wall_s * cores):.0f}"
                f"+{100 * r.sims_cpu_s / (r.wall_s * cores):.0f}",
                f"{percentile([(x.started - x.due) * 1000 for x in r.measured], 99):.1f}",
            ]
        )
    return table(headers, rows)


def summary_table(
    results: Sequence[CellResult], settings: Settings, extra_slo: float, capacity: float
) -> str:
    """Each strategy's goodput over round robin's at the same offered rate, and the goal."""
    by_rate: dict[float, dict[str, CellResult]] = {}
    for r in results:
        by_rate.setdefault(r.rate, {})[r.strategy] = r
    others = [s for s in dict.fromkeys(r.strategy for r in results) if s != "round_robin"]
    headers = [
        "offered/s",
        "target load",
        *(f"{s}/RR" for s in others),
        *(f"{s}/RR @{extra_slo:g}s" for s in others),
        "SA Jain",
        "goal (SA >= 1.3x RR, Jain >= 0.9)",
    ]
    rows = []
    for rate, cells in by_rate.items():
        rr = cells.get("round_robin")
        sa = cells.get("session_affinity")
        ratios = []
        for slo in (settings.slo_s, extra_slo):
            for name in others:
                cell = cells.get(name)
                ratios.append(_ratio(cell.goodput(slo), rr.goodput(slo)) if cell and rr else "-")
        if sa and rr:
            fair = sa.fairness(settings.slo_s)
            jain_text = "n/a" if math.isnan(fair) else f"{fair:.3f}"
            if _collapsed(cells.values(), settings.slo_s):
                verdict = "n/a: every strategy < 50 % good"
            elif sa.goodput(settings.slo_s) >= 1.3 * rr.goodput(settings.slo_s) and fair >= 0.9:
                verdict = "met"
            else:
                verdict = "not met"
        else:
            verdict = jain_text = "-"
        any_cell = next(iter(cells.values()))
        offered = len(any_cell.measured) / settings.window_s
        rows.append([f"{offered:.1f}", f"{rate / capacity:.2f}", *ratios, jain_text, verdict])
    return table(headers, rows)


def _collapsed(cells: Iterable[CellResult], slo_s: float) -> bool:
    """Past the knee for everyone: ratios of near-zero goodputs say nothing."""
    return all(len(c.good(slo_s)) < 0.5 * len(c.measured) for c in cells)


def peak_line(results: Sequence[CellResult], settings: Settings) -> str:
    peaks: dict[str, tuple[float, float]] = {}
    for r in results:
        g = r.goodput(settings.slo_s)
        if r.strategy not in peaks or g > peaks[r.strategy][0]:
            peaks[r.strategy] = (g, r.rate)
    parts = [f"{name} {g:.2f}/s (at {rate:.1f}/s offered)" for name, (g, rate) in peaks.items()]
    line = "peak goodput (the most served within the objective at any offered rate): "
    line += ", ".join(parts)
    if "session_affinity" in peaks and "round_robin" in peaks:
        sa_peak, sa_rate = peaks["session_affinity"]
        ratio = sa_peak / peaks["round_robin"][0] if peaks["round_robin"][0] else math.inf
        fair = next(
            r.fairness(settings.slo_s)
            for r in results
            if r.strategy == "session_affinity" and r.rate == sa_rate
        )
        met = ratio >= 1.3 and fair >= 0.9
        line += (
            f"\ngoal at saturation (peak goodput SA >= 1.3x RR, SA Jain >= 0.9): SA/RR "
            f"{ratio:.2f}x, Jain {fair:.3f}: {'MET' if met else 'NOT MET'}"
        )
    return line


def _cores() -> int:
    return os.cpu_count() or 1


# -- main -----------------------------------------------------------------------------------


def _floats(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names:
        spec, slash, mode = name.partition("/")
        base, colon, epsilon = spec.partition(":")
        affinity = base == "session_affinity"
        if (
            base not in STRATEGIES
            or (colon and not affinity)
            or (slash and (not affinity or mode != "impatient"))
        ):
            raise argparse.ArgumentTypeError(
                f"unknown strategy {name!r}; choose from {STRATEGIES}, or "
                "session_affinity:EPS and/or session_affinity/impatient"
            )
        if colon:
            _floats(epsilon)
    return names


# Workload presets. `history` is the case session affinity exists for: enterprise assistants
# whose conversations run for many turns, so a turn's own history outweighs the tenant's
# system prompt. `system` is the opposite: every prompt is mostly a long system prompt
# that any endpoint has cached, whatever the routing.
WORKLOADS: dict[str, dict[str, float]] = {
    "history": {
        "system_min_tokens": 100,
        "system_max_tokens": 300,
        "user_min_tokens": 20,
        "user_max_tokens": 150,
        "reply_min_tokens": 20,
        "reply_max_tokens": 100,
        "min_turns": 6,
        "max_turns": 24,
        "think_s": 8.0,
        "min_gap_s": 2.0,
        "warmup_s": 20.0,
    },
    "system": {
        "system_min_tokens": 400,
        "system_max_tokens": 800,
        "user_min_tokens": 15,
        "user_max_tokens": 60,
        "reply_min_tokens": 20,
        "reply_max_tokens": 120,
        "min_turns": 3,
        "max_turns": 12,
        "think_s": 8.0,
        "min_gap_s": 2.0,
        "warmup_s": 20.0,
    },
}
_PRESET_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("system_min_tokens", int, "preset"),
    ("system_max_tokens", int, "preset"),
    ("user_min_tokens", int, "preset"),
    ("user_max_tokens", int, "preset; the simulator's reply echoes the user's message"),
    ("reply_min_tokens", int, "preset; simulator --reply-min-tokens and history replies"),
    ("reply_max_tokens", int, "preset; simulator --reply-max-tokens and history replies"),
    ("min_turns", int, "preset"),
    ("max_turns", int, "preset"),
    ("think_s", float, "preset: mean modelled s between a conversation's turns"),
    ("min_gap_s", float, "preset: no turn sooner than this after the previous"),
    ("warmup_s", float, "preset: modelled s before the window, not measured"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.routing_strategies",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--strategies",
        type=_names,
        default=list(STRATEGIES),
        help="comma-separated; session_affinity:EPS runs it with that epsilon, and "
        "session_affinity/impatient lets admission spill to any free slot",
    )
    run.add_argument(
        "--loads",
        type=_floats,
        default=[0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 1.0],
        help="offered rates as fractions of the nominal capacity (printed; the slot-limited "
        "throughput if every request recomputed only its new tokens)",
    )
    run.add_argument(
        "--rates",
        type=_floats,
        default=None,
        help="absolute offered rates per modelled second (overrides --loads)",
    )
    run.add_argument("--time-scale", type=float, default=1.0, help="simulator --time-scale")
    run.add_argument("--window-s", type=float, default=24.0, help="modelled s, measured")
    run.add_argument("--slo-s", type=float, default=1.0, help="TTFT objective, modelled s")
    run.add_argument(
        "--extra-slo-s", type=float, default=0.25, help="a second, tighter TTFT objective"
    )
    run.add_argument(
        "--ttft-cap-s", type=float, default=10.0, help="stop waiting for first tokens after this"
    )
    run.add_argument("--seed", type=int, default=1)
    run.add_argument(
        "--dry-run", action="store_true", help="print the workload and capacity, run nothing"
    )

    sim = parser.add_argument_group("simulated endpoints (one process each)")
    sim.add_argument("--endpoints", type=int, default=4)
    sim.add_argument("--max-num-seqs", type=int, default=16)
    sim.add_argument(
        "--kv-blocks",
        type=int,
        default=6000,
        help="96k tokens: about what a 7B model in fp16 leaves for KV cache on an 80 GB GPU",
    )
    sim.add_argument("--block-size", type=int, default=16)
    sim.add_argument("--max-model-len", type=int, default=8192)
    sim.add_argument(
        "--prefill-ms-per-token",
        type=float,
        default=SimDefaults.prefill_ms_per_token,
        help="the simulator's default; raise it to model a slower prefill",
    )

    pool = parser.add_argument_group("pool")
    pool.add_argument("--max-tokens", type=int, default=256, help="per request")
    pool.add_argument(
        "--max-concurrency", type=int, default=32, help="Endpoint.max_concurrency (admission)"
    )
    pool.add_argument(
        "--epsilon", type=float, default=0.25, help="SessionAffinity bounded-load epsilon"
    )

    load = parser.add_argument_group(
        "workload (the preset sets the defaults of every flag below that says 'preset')"
    )
    load.add_argument(
        "--workload",
        choices=sorted(WORKLOADS),
        default="history",
        help="history: long conversations whose own history dominates the prompt (what "
        "affinity is for); system: long shared system prompts, short conversations",
    )
    load.add_argument("--tenants", type=int, default=4)
    load.add_argument(
        "--tenant-skew", type=float, default=0.6, help="tenant i's share is skew**i (normalised)"
    )
    for flag, kind, text in _PRESET_FLAGS:
        load.add_argument(f"--{flag.replace('_', '-')}", type=kind, default=None, help=text)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    preset = WORKLOADS[args.workload]
    for flag, _, _ in _PRESET_FLAGS:
        if getattr(args, flag) is None:
            setattr(args, flag, preset[flag])
    return Settings(
        endpoints=args.endpoints,
        max_num_seqs=args.max_num_seqs,
        kv_blocks=args.kv_blocks,
        block_size=args.block_size,
        max_model_len=args.max_model_len,
        time_scale=args.time_scale,
        prefill_ms_per_token=args.prefill_ms_per_token,
        reply_min_tokens=args.reply_min_tokens,
        reply_max_tokens=args.reply_max_tokens,
        max_tokens=args.max_tokens,
        max_concurrency=args.max_concurrency,
        epsilon=args.epsilon,
        tenants=args.tenants,
        tenant_skew=args.tenant_skew,
        system_min_tokens=args.system_min_tokens,
        system_max_tokens=args.system_max_tokens,
        user_min_tokens=args.user_min_tokens,
        user_max_tokens=args.user_max_tokens,
        min_turns=args.min_turns,
        max_turns=args.max_turns,
        think_s=args.think_s,
        min_gap_s=args.min_gap_s,
        warmup_s=args.warmup_s,
        window_s=args.window_s,
        ttft_cap_s=args.ttft_cap_s,
        slo_s=args.slo_s,
        seed=args.seed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from(args)
    costs = SimDefaults()
    print(f"command: {command_line()}")
    print(f"simulator args (each of {settings.endpoints}): {' '.join(settings.simulator_args())}")

    # Calibrate: the workload's token statistics decide the nominal capacity.
    # Calibrate on a long sample so the estimate does not move with the window length.
    long_run = dataclasses.replace(settings, window_s=120.0)
    probe_tenants, probe = make_workload(long_run, 10.0)
    probe_stats = workload_stats(long_run, probe_tenants, probe, round(10.0 * settings.think_s))
    slots = settings.endpoints * settings.max_num_seqs
    capacity_cached = slots / (probe_stats.service_ms(settings, costs, cached=True) / 1000)
    capacity_cold = slots / (probe_stats.service_ms(settings, costs, cached=False) / 1000)
    print(
        f"nominal capacity (slot-limited, modelled): {capacity_cached:.1f} req/s if only new "
        f"tokens are prefilled, {capacity_cold:.1f} req/s if every prompt is recomputed "
        f"(max throughput gain from caching: {capacity_cached / capacity_cold:.3f}x)"
    )
    rates = args.rates or [round(load * capacity_cached, 1) for load in args.loads]

    workloads: dict[float, tuple[list[Tenant], list[Arrival]]] = {}
    stat_rows = []
    kv_tokens = settings.kv_blocks * settings.block_size
    for rate in rates:
        tenants, arrivals = make_workload(settings, rate)
        workloads[rate] = (tenants, arrivals)
        stats = workload_stats(settings, tenants, arrivals, round(rate * settings.think_s))
        stat_rows.append(
            [
                f"{rate:.1f}",
                str(stats.requests),
                str(stats.conversations),
                f"{stats.mean_prompt_tokens:.0f}",
                f"{stats.mean_new_tokens:.0f}",
                f"{stats.mean_output_tokens:.0f}",
                f"{stats.working_set_tokens / 1000:.0f}k",
                f"{kv_tokens / (stats.working_set_tokens / settings.endpoints):.2f}",
                _pct(stats.ideal_hit),
                _pct(stats.system_only_hit),
            ]
        )
    print()
    print("workload (same seed for every strategy; tokens as the simulator counts them):")
    print(
        table(
            [
                "offered/s",
                "requests",
                "live convs",
                "prompt tok",
                "new tok",
                "output tok",
                "working set",
                "KV / (WS/endpoints)",
                "ideal hit %",
                "system-only hit %",
            ],
            stat_rows,
        )
    )
    if args.dry_run:
        return 0
    results: list[CellResult] = []
    started = time.perf_counter()
    with sigterm_as_exit():
        for rate in rates:
            tenants, arrivals = workloads[rate]
            for strategy in args.strategies:
                result = run_cell(settings, strategy, rate, tenants, arrivals)
                results.append(result)
                goodput = result.goodput(settings.slo_s)
                print(
                    f"  {rate:6.1f}/s {strategy:16s} goodput {goodput:6.2f}/s"
                    f" hit {_pct(result.hit_rate())}% ({result.wall_s:.1f}s wall)",
                    file=sys.stderr,
                    flush=True,
                )
    print()
    print(
        f"results (TTFT objective {settings.slo_s:g}s modelled; TTFT in modelled s = wall / "
        f"{settings.time_scale:g}; window {settings.window_s:g}s after {settings.warmup_s:g}s "
        f"warm-up):"
    )
    print(results_table(results, settings, args.extra_slo_s))
    print()
    print(summary_table(results, settings, args.extra_slo_s, capacity_cached))
    print()
    print(peak_line(results, settings))
    print(f"total wall time {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; simulators stopped", file=sys.stderr)
        sys.exit(130)
