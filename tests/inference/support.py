"""Helpers shared by the pool, health and admission tests: bounded condition waits, a
simulator subprocess the test can kill, scripted fake fleets and a fixed-order strategy."""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from inference import Candidate, Endpoint, RouteContext, VLLMClient

REPO_ROOT = Path(__file__).resolve().parents[2]
SIM_MODEL = "Qwen/Qwen-7B-Chat"
STARTUP_DEADLINE_S = 20.0
SSE_HEADERS = {"content-type": "text/event-stream"}
Handler = Callable[[httpx.Request], httpx.Response]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll `predicate` until it holds; fail the test if `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"not true within {timeout}s: {what or predicate}")
        time.sleep(0.005)  # poll interval; the deadline bounds the wait


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SimProcess:
    """A `python -m inference.simulator` subprocess and the Endpoint that reaches it."""

    def __init__(
        self, endpoint: Endpoint, proc: subprocess.Popen[bytes], log: Path, *, serving: bool
    ) -> None:
        self.endpoint = endpoint
        self.proc = proc
        self.log = log
        self.serving = serving  # False for --refuse-connections

    def kill(self) -> None:
        """SIGKILL: the process dies mid-response, as a crashed or preempted node does."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait(timeout=10)

    def set_faults(self, **rates: float) -> None:
        """Change fault injection at run time through the simulator's `/_sim/faults`."""
        response = httpx.post(f"{self.endpoint.url}/_sim/faults", json=rates, timeout=5.0)
        response.raise_for_status()


def start_simulators(log_dir: Path, *specs: tuple[str, Sequence[str]]) -> list[SimProcess]:
    """Start simulators (name, extra flags) in parallel; return once each is healthy."""
    python_path = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(python_path)}
    sims: list[SimProcess] = []
    for name, args in specs:
        port = free_port()
        log = log_dir / f"{name}.log"
        command = [
            sys.executable, "-m", "inference.simulator",
            "--port", str(port),
            "--model", SIM_MODEL,
            "--name", name,
            "--log-level", "warning",
            *args,
        ]  # fmt: skip
        with log.open("wb") as sink:
            proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=sink, stderr=sink)
        endpoint = Endpoint(name=name, url=f"http://127.0.0.1:{port}", model=SIM_MODEL)
        serving = "--refuse-connections" not in args
        sims.append(SimProcess(endpoint, proc, log, serving=serving))
    try:
        for sim in sims:
            _wait_healthy(sim)
    except BaseException:
        for sim in sims:
            sim.stop()
        raise
    return sims


def _wait_healthy(sim: SimProcess) -> None:
    """Healthy, or for --refuse-connections (which never answers) announced."""
    refusing = not sim.serving
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while time.monotonic() < deadline:
        if sim.proc.poll() is not None:
            pytest.fail(f"simulator exited with {sim.proc.returncode}:\n{sim.log.read_text()}")
        if refusing:
            if " refusing connections on " in sim.log.read_text():
                return
            time.sleep(0.05)  # poll interval; the deadline bounds the wait
            continue
        try:
            if httpx.get(f"{sim.endpoint.url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # poll interval; the deadline bounds the wait
    pytest.fail(f"simulator not healthy within {STARTUP_DEADLINE_S}s:\n{sim.log.read_text()}")


@contextlib.contextmanager
def running_simulators(
    log_dir: Path, *specs: tuple[str, Sequence[str]]
) -> Iterator[list[SimProcess]]:
    """Start simulators for the duration of a `with` block; always stop them."""
    sims = start_simulators(log_dir, *specs)
    try:
        yield sims
    finally:
        for sim in sims:
            sim.stop()


class FixedOrder:
    """A routing strategy that ranks endpoints by a given list of names: tests decide
    which endpoint is tried first without searching for affinity keys."""

    name = "fixed_order"

    def __init__(self, *names: str) -> None:
        self.names = list(names)

    def rank(self, candidates: Sequence[Candidate], ctx: RouteContext) -> list[Candidate]:
        return sorted(candidates, key=lambda c: self.names.index(c.endpoint.name))


class FakeFleet:
    """Scripted endpoints behind httpx.MockTransport, counting the calls each receives."""

    def __init__(self, handlers: dict[str, Handler]) -> None:
        self.handlers = handlers
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def client_for(self, endpoint: Endpoint) -> VLLMClient:
        def handler(request: httpx.Request) -> httpx.Response:
            with self._lock:
                self.calls[endpoint.name] += 1
            return self.handlers[endpoint.name](request)

        return VLLMClient(endpoint, transport=httpx.MockTransport(handler))


class HangingServer:
    """A TCP port that accepts connections (the kernel completes the handshake) and never
    answers: a wedged server, for deadline tests."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def endpoint(self, name: str = "hung") -> Endpoint:
        return Endpoint(name=name, url=self.url, model=SIM_MODEL)

    def close(self) -> None:
        self._sock.close()


class CannedServer:
    """A real HTTP server that answers every request with one fixed response, then
    closes the connection: a scripted model server for clients that cannot take an
    httpx transport (the aiohttp-based async client)."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        head = [f"HTTP/1.1 {status} Canned"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
        self.response = "\r\n".join(head).encode() + body
        self.requests: list[bytes] = []

        class Handler(socketserver.BaseRequestHandler):
            def handle(inner) -> None:  # `self` is the CannedServer here
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = inner.request.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, rest = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(rest) < length:
                    rest += inner.request.recv(65536)
                self.requests.append(rest)
                inner.request.sendall(self.response)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def endpoint(self, name: str = "canned") -> Endpoint:
        return Endpoint(name=name, url=self.url, model=SIM_MODEL)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
