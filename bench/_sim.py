"""Simulator processes and measurement helpers shared by the benchmarks.

Each benchmark starts its own `python -m inference.simulator` processes on 127.0.0.1 with
``--port 0`` (the simulator prints the URL it bound) and always stops them again, also on
Ctrl-C or an exception; on Linux they also get SIGTERM if the benchmark process dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import selectors
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parents[1]
_PR_SET_PDEATHSIG = 1
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGTERM the child when this process dies.

    The libc function is looked up here, in the parent: between fork and exec the child
    may only do async-signal-safe work, so the hook itself just makes one call.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:  # pragma: no cover - runs in the child
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return hook


@dataclass
class Simulator:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def cpu_seconds(self) -> float:
        """User + system CPU time of the simulator process so far (Linux /proc)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return math.nan
        # After the ")" the fields start at 3 (state): utime is 14, stime is 15.
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _start(name: str, args: Sequence[str], log_dir: Path) -> Simulator:
    log_path = log_dir / f"{name}.log"
    argv = [
        sys.executable,
        "-m",
        "inference.simulator",
        "--port",
        "0",
        "--host",
        "127.0.0.1",
        "--name",
        name,
        "--log-level",
        "warning",
        *args,
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            preexec_fn=_die_with_parent_hook(),
        )
    return Simulator(name=name, url="", process=process, log_path=log_path)


def _await_url(sim: Simulator, deadline: float) -> None:
    """Read the simulator's "serving ... on URL" line from its stdout."""
    assert sim.process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(sim.process.stdout, selectors.EVENT_READ)
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise RuntimeError(f"simulator {sim.name} did not start: {_tail(sim.log_path)}")
            chunk = os.read(sim.process.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"simulator {sim.name} exited: {_tail(sim.log_path)}")
            line += chunk
    text = line.decode().strip()
    if " on " not in text:
        raise RuntimeError(f"unexpected simulator banner: {text!r}")
    sim.url = text.rsplit(" on ", 1)[1]


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _stop(sim: Simulator) -> None:
    process = sim.process
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


def stop_simulators(sims: Sequence[Simulator]) -> None:
    """Stop them now (idempotent; `simulators()` also stops them on exit)."""
    for sim in sims:
        _stop(sim)


@contextlib.contextmanager
def simulators(
    count: int, args: Sequence[str], *, prefix: str = "sim", timeout_s: float = 60.0
) -> Iterator[list[Simulator]]:
    """Start `count` simulators with the same `args`, wait until they serve, stop them after.

    Names are ``{prefix}-1`` … ``{prefix}-N``; logs go to a temporary folder removed at the
    end (its last lines are shown if a simulator fails to start).
    """
    with tempfile.TemporaryDirectory(prefix="switchboard-bench-") as tmp:
        sims: list[Simulator] = []
        try:
            for index in range(count):
                sims.append(_start(f"{prefix}-{index + 1}", args, Path(tmp)))
            deadline = time.monotonic() + timeout_s
            for sim in sims:
                _await_url(sim, deadline)
            with httpx.Client(timeout=5.0) as http:
                for sim in sims:
                    while http.get(f"{sim.url}/health").status_code != 200:
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"simulator {sim.name} never became healthy")
                        time.sleep(0.05)
            yield sims
        finally:
            for sim in sims:
                _stop(sim)


def scrape_counters(http: httpx.Client, url: str) -> dict[str, float]:
    """Every sample of the simulator's /metrics, summed over label sets, by sample name."""
    text = http.get(f"{url}/metrics").text
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            values[sample.name] = values.get(sample.name, 0.0) + float(sample.value)
    return values


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: 1 when all equal, 1/n when one gets everything."""
    total = sum(values)
    squares = sum(v * v for v in values)
    if not values or squares == 0:
        return math.nan
    return total * total / (len(values) * squares)


def command_line() -> str:
    """The exact command that ran this benchmark, ready to paste."""
    module = Path(sys.argv[0]).resolve()
    try:
        relative = module.relative_to(REPO_ROOT).with_suffix("")
        head = ["python", "-m", ".".join(relative.parts)]
    except ValueError:
        head = ["python", sys.argv[0]]
    return shlex.join([*head, *sys.argv[1:]])


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table with columns padded for reading in a terminal."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so `finally` blocks stop the simulators."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
