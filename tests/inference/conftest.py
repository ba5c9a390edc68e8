"""Fixtures for the framework-free inference tests: a real simulator process, closed
ports and fake vLLM streams. Nothing here touches Django or a database."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inference import Endpoint

REPO_ROOT = Path(__file__).resolve().parents[2]
SIM_MODEL = "Qwen/Qwen-7B-Chat"
SIM_MAX_MODEL_LEN = 512
STARTUP_DEADLINE_S = 20.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, *, serving: bool) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"simulator exited with {proc.returncode}:\n{log.read_text()}")
        if not serving:
            if " refusing connections on " in log.read_text():
                return
        else:
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
        time.sleep(0.05)  # poll interval, not a wait-and-hope: the deadline bounds it
    pytest.fail(f"simulator not ready within {STARTUP_DEADLINE_S}s:\n{log.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _spawn(name: str, args: Sequence[str], log: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = _free_port()
    python_path = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(python_path)}
    command = [
        sys.executable, "-m", "inference.simulator",
        "--port", str(port),
        "--model", SIM_MODEL,
        "--max-model-len", str(SIM_MAX_MODEL_LEN),
        "--name", name,
        "--log-level", "warning",
        *args,
    ]  # fmt: skip
    with log.open("wb") as sink:
        # Output goes to a file, not a pipe nobody reads, so the child can never block on it.
        proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=sink, stderr=sink)
    return f"http://127.0.0.1:{port}", proc


LaunchSimulators = Callable[..., list[Endpoint]]


class _Launcher:
    """Starts simulator subprocesses with their own extra flags and stops them all later.

    ``launch(("a", [flags...]), ("b", [flags...]))`` starts them all at once (startup is
    the slow part) and returns their Endpoints once each is ready; one started with
    --refuse-connections is ready when it announces itself.
    """

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self._procs: list[subprocess.Popen[bytes]] = []

    def launch(self, *specs: tuple[str, Sequence[str]]) -> list[Endpoint]:
        started = []
        for name, args in specs:
            log = self._tmp.mktemp(f"simulator-{name}") / "simulator.log"
            url, proc = _spawn(name, args, log)
            self._procs.append(proc)
            started.append((name, url, proc, log, "--refuse-connections" not in args))
        for _, url, proc, log, serving in started:
            _wait_ready(url, proc, log, serving=serving)
        return [Endpoint(name=name, url=url, model=SIM_MODEL) for name, url, *_ in started]

    def stop_all(self) -> None:
        for proc in self._procs:
            _stop(proc)


@pytest.fixture(scope="module")
def launch_simulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchSimulators]:
    """`_Launcher.launch` for one module; its simulators stop with the module."""
    launcher = _Launcher(tmp_path_factory)
    try:
        yield launcher.launch
    finally:
        launcher.stop_all()


@pytest.fixture(scope="session")
def seeded_simulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Endpoint]]:
    """Two fast servers with filler replies that differ only in --seed (1 and 2).

    Shared by several modules because every process start costs about a second of CPU.
    Both have two batch slots, which sequential tests never notice.
    """
    launcher = _Launcher(tmp_path_factory)
    common = ["--time-scale", "0.01", "--max-num-seqs", "2"]
    try:
        yield launcher.launch(
            ("sdk-a", ["--seed", "1", *common]), ("sdk-b", ["--seed", "2", *common])
        )
    finally:
        launcher.stop_all()


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    """A real `python -m inference.simulator` subprocess, as an Endpoint.

    Replies are the marker and echo only (no filler), which the client tests rely on, and
    the old --ttft-ms/--token-ms spellings keep being exercised here.
    """
    log = tmp_path_factory.mktemp("simulator") / "simulator.log"
    args = ["--ttft-ms", "2", "--token-ms", "0.5"]
    args += ["--reply-min-tokens", "0", "--reply-max-tokens", "0"]
    url, proc = _spawn("sim-test", args, log)
    try:
        _wait_ready(url, proc, log, serving=True)
        announcement = f"simulator sim-test serving {SIM_MODEL} on {url}"
        if announcement not in log.read_text():
            pytest.fail(f"missing startup line {announcement!r}:\n{log.read_text()}")
        yield Endpoint(name="sim-test", url=url, model=SIM_MODEL)
    finally:
        _stop(proc)


@pytest.fixture
def make_closed_endpoint() -> Callable[[str], Endpoint]:
    """Endpoints on ports nothing listens on (connection refused)."""

    def make(name: str) -> Endpoint:
        return Endpoint(name=name, url=f"http://127.0.0.1:{_free_port()}", model=SIM_MODEL)

    return make


@pytest.fixture
def closed_endpoint(make_closed_endpoint: Callable[[str], Endpoint]) -> Endpoint:
    return make_closed_endpoint("dead")


SseBuilder = Callable[..., bytes]


@pytest.fixture
def sse_body() -> SseBuilder:
    """Build a vLLM-shaped SSE body from content pieces, for httpx.MockTransport."""

    def build(
        pieces: list[str],
        *,
        finish_reason: str | None = "stop",
        usage: dict[str, Any] | None = None,
        done: bool = True,
    ) -> bytes:
        base = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1}

        def choice(delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

        chunks: list[dict[str, Any]] = [
            {**base, "choices": [choice({"role": "assistant", "content": ""})]}
        ]
        chunks += [{**base, "choices": [choice({"content": piece})]} for piece in pieces]
        if finish_reason is not None:
            chunks.append({**base, "choices": [choice({"content": ""}, finish_reason)]})
        if usage is not None:
            chunks.append({**base, "choices": [], "usage": usage})
        lines = [f"data: {json.dumps(chunk)}\n\n" for chunk in chunks]
        if done:
            lines.append("data: [DONE]\n\n")
        return "".join(lines).encode()

    return build


MetricValue = Callable[..., float]


@pytest.fixture
def metric_value() -> MetricValue:
    """Read one sample from a server's /metrics: ``metric_value(url, name, **labels)``."""

    def read(url: str, name: str, **labels: str) -> float:
        text = httpx.get(f"{url}/metrics", timeout=5.0).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                wanted = all(sample.labels.get(k) == v for k, v in labels.items())
                if sample.name == name and wanted:
                    return float(sample.value)
        raise AssertionError(f"no sample {name} {labels} in /metrics")

    return read
