"""Fixtures for the framework-free inference tests: a real simulator process, closed
ports and fake vLLM streams. Nothing here touches Django or a database."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from inference import Endpoint

REPO_ROOT = Path(__file__).resolve().parents[2]
SIM_MODEL = "Qwen/Qwen-7B-Chat"
SIM_MAX_MODEL_LEN = 512
STARTUP_DEADLINE_S = 20.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"simulator exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # poll interval, not a wait-and-hope: the deadline bounds it
    pytest.fail(f"simulator not healthy within {STARTUP_DEADLINE_S}s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    """A real `python -m inference.simulator` subprocess, as an Endpoint."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("simulator") / "simulator.log"
    python_path = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(python_path)}
    command = [
        sys.executable, "-m", "inference.simulator",
        "--port", str(port),
        "--model", SIM_MODEL,
        "--max-model-len", str(SIM_MAX_MODEL_LEN),
        "--ttft-ms", "2",
        "--token-ms", "0.5",
        "--name", "sim-test",
        "--log-level", "warning",
    ]  # fmt: skip
    with log.open("wb") as sink:
        # Output goes to a file, not a pipe nobody reads, so the child can never block on it.
        proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=sink, stderr=sink)
    try:
        _wait_healthy(url, proc, log)
        announcement = f"simulator sim-test serving {SIM_MODEL} on {url}"
        if announcement not in log.read_text():
            pytest.fail(f"missing startup line {announcement!r}:\n{log.read_text()}")
        yield Endpoint(name="sim-test", url=url, model=SIM_MODEL)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


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
