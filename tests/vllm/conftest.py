"""The real-vLLM test tier: one real vLLM server (CPU, tiny random model) per session.

Every test under tests/vllm/ is marked `vllm` here, so the default run (`-m "not vllm"`)
leaves them out and `pytest -m vllm` selects them. The server comes from
tools/real_vllm/serve.py; setup.py builds its venv and model on first use.

Environment:
    SWITCHBOARD_VLLM_SETUP=0   never build: fail at once when the venv/model are missing
    SWITCHBOARD_VLLM_URL=URL   use a vLLM already serving Qwen/Qwen-7B-Chat with
                               --max-model-len 1024 at URL instead of starting one
                               (e.g. `python3 tools/real_vllm/serve.py` in another shell)
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS = REPO_ROOT / "tools" / "real_vllm"
MODEL = "Qwen/Qwen-7B-Chat"
MAX_MODEL_LEN = 1024
SIM_STARTUP_DEADLINE_S = 30.0
SETUP_DEADLINE_S = 1800.0
# Stable paths (not tmp_path) so CI can keep them as artifacts after a failure.
LOG_DIR = REPO_ROOT / ".cache" / "real_vllm" / "logs"
# What the session did, for the terminal summary.
_REPORT: list[str] = []


def _load_tool(name: str) -> ModuleType:
    """tools/ is not a package; load its scripts by path under a private module name."""
    spec = importlib.util.spec_from_file_location(f"_real_vllm_{name}", TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


serve = _load_tool("serve")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects anything
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Modules also set `pytestmark`; this catches any test module added without it.
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.vllm)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _REPORT:
        terminalreporter.write_sep("-", "real vLLM")
        for line in _REPORT:
            terminalreporter.write_line(line)


def _ensure_built(log_dir: Path) -> None:
    setup = _load_tool("setup")
    if setup.is_ready():
        return
    if os.environ.get("SWITCHBOARD_VLLM_SETUP", "1") == "0":
        pytest.fail(
            "real vLLM is not set up and SWITCHBOARD_VLLM_SETUP=0 forbids building it: "
            "run `python3 tools/real_vllm/setup.py` (about 2-3 minutes, 3.5 GB under "
            ".cache/real_vllm/)",
            pytrace=False,
        )
    log = log_dir / "setup.log"
    started = time.monotonic()
    # setup.py needs Python 3.11, which is what the project venv runs.
    with open(log, "wb") as out:
        result = subprocess.run(
            [sys.executable, str(TOOLS / "setup.py")],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=SETUP_DEADLINE_S,
            check=False,
        )
    if result.returncode:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        pytest.fail(f"tools/real_vllm/setup.py failed ({log}):\n{tail}", pytrace=False)
    _REPORT.append(f"built venv and model in {time.monotonic() - started:.0f}s (log {log})")


@pytest.fixture(scope="session")
def real_vllm_url() -> Iterator[str]:
    """Base URL (no /v1) of a real vLLM serving MODEL with max_model_len MAX_MODEL_LEN."""
    external = os.environ.get("SWITCHBOARD_VLLM_URL")
    if external:
        url = external.rstrip("/")
        try:
            healthy = httpx.get(f"{url}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            healthy = False
        if not healthy:
            pytest.fail(f"SWITCHBOARD_VLLM_URL={url} does not answer /health", pytrace=False)
        yield url
        return
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    _ensure_built(LOG_DIR)
    # One log per session (sessions in other checkouts' shells may overlap); keep the last few.
    for old in sorted(LOG_DIR.glob("vllm-server-*.log"), key=lambda p: p.stat().st_mtime)[:-5]:
        old.unlink(missing_ok=True)
    log = LOG_DIR / f"vllm-server-{os.getpid()}.log"
    started = time.monotonic()
    try:
        with serve.running_server(log) as url:
            took = time.monotonic() - started
            _REPORT.append(f"vLLM {url} healthy after {took:.0f}s (log {log})")
            yield url
    except serve.ServerError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def simulator_1024_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The project's simulator, configured like the real server (model, context length)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("simulator") / "simulator.log"
    python_path = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(python_path)}
    command = [
        sys.executable, "-m", "inference.simulator",
        "--port", str(port),
        "--model", MODEL,
        "--max-model-len", str(MAX_MODEL_LEN),
        "--ttft-ms", "2",
        "--token-ms", "0.5",
        "--name", "sim-conformance",
        "--log-level", "warning",
    ]  # fmt: skip
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=sink, stderr=sink)
    try:
        deadline = time.monotonic() + SIM_STARTUP_DEADLINE_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"simulator exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"simulator not healthy in {SIM_STARTUP_DEADLINE_S}s:\n{log.read_text()}"
                )
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session", params=["simulator", "vllm"])
def server_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def server_url(server_kind: str, request: pytest.FixtureRequest) -> str:
    """The same checks run against both peers: any difference between them fails."""
    fixture = "real_vllm_url" if server_kind == "vllm" else "simulator_1024_url"
    return str(request.getfixturevalue(fixture))
