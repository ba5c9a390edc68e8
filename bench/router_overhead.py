"""What does the pool add to a request? Direct `VLLMClient` versus `Pool`, side by side.

One simulator runs with a tiny ``--time-scale`` (model delays of microseconds), so what
is left of a request's latency is HTTP, SSE parsing and Python on both sides. The same
client threads send the same requests (a) straight to the endpoint with one shared
`VLLMClient` and (b) through a `Pool` with that one endpoint, the session-affinity
strategy and admission control (per-endpoint concurrency budget, tenant-fair queue) in
the path. Blocks of (a) and (b) alternate A B B A A B … so that drift (other processes,
CPU frequency) falls on both equally. Reported per concurrency level: p50/p99 latency of
each mode, the latency the pool adds, and requests per CPU-second of this (client)
process. A microbenchmark then times routing alone, without any network, to explain the
difference.

Run ``python -m bench.router_overhead --help`` for the knobs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from bench._sim import command_line, percentile, sigterm_as_exit, simulators, table
from inference import (
    ChatRequest,
    ChatResult,
    Endpoint,
    Pool,
    RouteContext,
    SessionAffinity,
    TokenDelta,
    VLLMClient,
)

MODEL = "Qwen/Qwen-7B-Chat"
MODES = ("direct", "pool")


@dataclass
class ModeStats:
    latencies_ms: list[float] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    wall_s: float = 0.0
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    block_p50s: list[float] = field(default_factory=list)


def make_request(prompt_words: int, max_tokens: int) -> ChatRequest:
    words = " ".join(f"w{i % 97}" for i in range(prompt_words))
    return ChatRequest(
        model=MODEL,
        messages=(
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": words},
        ),
        max_tokens=max_tokens,
        temperature=0.0,
    )


def contexts(thread: int, count: int = 64) -> list[RouteContext]:
    """Distinct conversations and a few tenants, as a worker would see them."""
    return [
        RouteContext(affinity_key=f"conv-{thread}-{i}", tenant=f"tenant-{(thread + i) % 4}")
        for i in range(count)
    ]


def run_block(
    call: Callable[[int, int], None], concurrency: int, seconds: float
) -> tuple[list[float], int, float, float]:
    """`concurrency` threads call `call(thread, i)` in a loop for `seconds`.

    Returns latencies (ms), errors, wall seconds and this process's CPU seconds.
    """
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    barrier = threading.Barrier(concurrency + 1)
    stop_at = [0.0]

    def worker(thread: int) -> None:
        barrier.wait()
        mine = latencies[thread]
        i = 0
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at[0]:
                return
            try:
                call(thread, i)
            except Exception:
                errors[thread] += 1
            mine.append((time.perf_counter() - t0) * 1000.0)
            i += 1

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(concurrency)]
    for thread in threads:
        thread.start()
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    stop_at[0] = wall0 + seconds
    barrier.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    return [x for per in latencies for x in per], sum(errors), wall, cpu


def order(blocks: int) -> Iterator[str]:
    """A B B A A B B A …: each mode runs first and second equally often."""
    for i in range(blocks):
        pair = MODES if i % 2 == 0 else MODES[::-1]
        yield from pair


def measure(
    url: str,
    sim_cpu: Callable[[], float],
    concurrency: int,
    args: argparse.Namespace,
) -> dict[str, ModeStats]:
    endpoint = Endpoint("sim-1", url, MODEL, max_concurrency=max(32, concurrency))
    request = make_request(args.prompt_words, args.max_tokens)
    ctxs = [contexts(t) for t in range(concurrency)]
    stream = not args.no_stream
    with VLLMClient(endpoint) as client, Pool([endpoint], strategy=SessionAffinity()) as pool:

        def direct(thread: int, i: int) -> None:
            client.chat(request, stream=stream)

        def pooled(thread: int, i: int) -> None:
            ctx = ctxs[thread][i % len(ctxs[thread])]
            pool.chat(request, ctx, stream=stream)

        calls = {"direct": direct, "pool": pooled}
        stats = {mode: ModeStats() for mode in MODES}
        for mode in MODES:  # warm-up: connections, ring, caches; not recorded
            run_block(calls[mode], concurrency, args.warmup_s)
        for mode in order(args.blocks):
            server0 = sim_cpu()
            latencies, errors, wall, cpu = run_block(calls[mode], concurrency, args.block_s)
            s = stats[mode]
            s.latencies_ms.extend(latencies)
            s.requests += len(latencies)
            s.errors += errors
            s.wall_s += wall
            s.client_cpu_s += cpu
            s.server_cpu_s += sim_cpu() - server0
            s.block_p50s.append(percentile(latencies, 50))
        return stats


# -- microbenchmark: routing without network -------------------------------------------------


class NullClient(VLLMClient):
    """Answers instantly from memory: what is left of `Pool.chat` is the pool itself."""

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self._result = ChatResult("ok", "stop", 10, 1, 0.0, 0.0, endpoint)

    def stream_chat(
        self, request: ChatRequest, *, budget_s: float | None = None
    ) -> Iterator[TokenDelta | ChatResult]:
        yield TokenDelta("ok")
        yield self._result


def _time_calls(fn: Callable[[int], None], iterations: int, threads: int) -> list[str]:
    """CPU microseconds per call of `fn` run from `threads` threads: best, median of 3."""
    for i in range(min(1000, iterations)):  # warm-up
        fn(i)
    per_thread = max(1, iterations // threads)

    def loop() -> None:
        for i in range(per_thread):
            fn(i)

    samples = []
    for _ in range(3):
        workers = [threading.Thread(target=loop) for _ in range(threads)]
        cpu0 = time.process_time()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        samples.append((time.process_time() - cpu0) / (per_thread * threads) * 1e6)
    best = min(samples)
    return [f"{best:.1f}", f"{statistics.median(samples):.1f}", f"{1e6 / best:,.0f}"]


def micro(iterations: int, endpoint_counts: Sequence[int], threads: int) -> list[list[str]]:
    request = make_request(64, 16)
    ctxs = contexts(0, 256)
    rows = []
    for count in endpoint_counts:
        endpoints = [
            Endpoint(f"gpu-{i}", f"http://10.0.0.{i + 1}:8000", MODEL) for i in range(count)
        ]
        with (
            Pool(endpoints, strategy=SessionAffinity(), client_factory=NullClient) as pool,
            NullClient(endpoints[0]) as null,
        ):

            def candidates(i: int, pool: Pool = pool) -> None:
                pool.candidates(request, ctxs[i % len(ctxs)])

            def admission(i: int, pool: Pool = pool) -> None:
                ctx = ctxs[i % len(ctxs)]
                slot = pool.admission.acquire(
                    lambda: pool.candidates(request, ctx, frozenset()), ctx, float("inf")
                )
                slot.release()

            def full(i: int, pool: Pool = pool) -> None:
                pool.chat(request, ctxs[i % len(ctxs)])

            def client_only(i: int, null: NullClient = null) -> None:
                for _ in null.stream_chat(request):
                    pass

            cases = [
                ("pool.candidates()", candidates),
                ("candidates + admission acquire/release", admission),
                ("Pool.chat with an in-memory client", full),
                ("in-memory client alone (baseline)", client_only),
            ]
            for name, fn in cases:
                rows.append([str(count), "1", name, *_time_calls(fn, iterations, 1)])
            # Every request takes several locks (pool, breaker, admission, ring); with
            # threads contending for them and for the GIL the same work costs more.
            contended = _time_calls(full, iterations, threads)
            rows.append(
                [str(count), str(threads), "Pool.chat with an in-memory client", *contended]
            )
    return rows


# -- main -----------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.router_overhead",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--concurrency",
        type=_ints,
        default=[1, 8],
        help="client threads per level; the last should saturate this machine",
    )
    parser.add_argument("--blocks", type=int, default=16, help="measured blocks per mode")
    parser.add_argument("--block-s", type=float, default=0.75, help="seconds per block")
    parser.add_argument("--warmup-s", type=float, default=0.5, help="per mode and level")
    parser.add_argument("--time-scale", type=float, default=0.001, help="simulator --time-scale")
    parser.add_argument("--max-tokens", type=int, default=16, help="tokens per reply")
    parser.add_argument("--prompt-words", type=int, default=64, help="user message length")
    parser.add_argument("--no-stream", action="store_true", help="non-streamed requests")
    parser.add_argument(
        "--micro-iterations", type=int, default=20000, help="per microbenchmark case"
    )
    parser.add_argument(
        "--micro-endpoints", type=_ints, default=[1, 4], help="pool sizes for the microbenchmark"
    )
    parser.add_argument(
        "--micro-threads", type=int, default=8, help="threads for the contended Pool.chat case"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(f"command: {command_line()}")
    sim_args = ["--time-scale", repr(args.time_scale)]
    print(f"simulator args: {' '.join(sim_args)}")
    results: dict[int, dict[str, ModeStats]] = {}
    with sigterm_as_exit(), simulators(1, sim_args) as sims:
        sim = sims[0]
        for concurrency in args.concurrency:
            results[concurrency] = measure(sim.url, sim.cpu_seconds, concurrency, args)
            print(f"  concurrency {concurrency} done", file=sys.stderr, flush=True)
    micro_rows = micro(args.micro_iterations, args.micro_endpoints, args.micro_threads)

    print()
    mode_text = "non-streamed" if args.no_stream else "streamed"
    print(
        f"end to end ({mode_text}, {args.max_tokens} tokens per reply, {args.blocks} blocks "
        f"of {args.block_s:g}s per mode, alternated):"
    )
    rows = []
    for concurrency, stats in results.items():
        for mode in MODES:
            s = stats[mode]
            rows.append(
                [
                    str(concurrency),
                    mode,
                    str(s.requests),
                    str(s.errors),
                    f"{s.requests / s.wall_s:.0f}",
                    f"{percentile(s.latencies_ms, 50):.2f}",
                    f"{percentile(s.latencies_ms, 99):.2f}",
                    f"{s.requests / s.client_cpu_s:.0f}",
                    f"{s.client_cpu_s / s.requests * 1e6:.0f}",
                    f"{s.server_cpu_s / s.requests * 1e6:.0f}",
                ]
            )
    print(
        table(
            [
                "threads",
                "mode",
                "requests",
                "errors",
                "req/s",
                "p50 ms",
                "p99 ms",
                "req per client CPU-s",
                "client CPU us/req",
                "server CPU us/req",
            ],
            rows,
        )
    )
    print()
    added_rows = []
    for concurrency, stats in results.items():
        direct, pool = stats["direct"], stats["pool"]
        # Per pair of neighbouring blocks: how stable is the difference?
        diffs = [p - d for p, d in zip(pool.block_p50s, direct.block_p50s, strict=True)]
        direct_cpu = direct.client_cpu_s / direct.requests
        pool_cpu = pool.client_cpu_s / pool.requests
        added_rows.append(
            [
                str(concurrency),
                f"{percentile(pool.latencies_ms, 50) - percentile(direct.latencies_ms, 50):+.3f}",
                f"{percentile(pool.latencies_ms, 99) - percentile(direct.latencies_ms, 99):+.3f}",
                f"{statistics.median(diffs):+.3f} ({min(diffs):+.2f} .. {max(diffs):+.2f})",
                f"{(pool_cpu - direct_cpu) * 1e6:+.0f}",
                f"{pool_cpu / direct_cpu:.3f}",
                f"{(pool.requests / pool.wall_s) / (direct.requests / direct.wall_s):.3f}",
            ]
        )
    print("added by the pool (pool - direct):")
    print(
        table(
            [
                "threads",
                "p50 ms",
                "p99 ms",
                "p50 per block pair: median (min .. max)",
                "client CPU us/req",
                "CPU per req pool/direct",
                "req/s pool/direct",
            ],
            added_rows,
        )
    )
    print()
    print("routing alone, no network (CPU time per call, best and median of 3):")
    headers = ["endpoints", "threads", "operation", "best us", "median us", "calls per CPU-s"]
    print(table(headers, micro_rows))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; simulators stopped", file=sys.stderr)
        sys.exit(130)
