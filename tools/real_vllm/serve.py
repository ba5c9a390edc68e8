#!/usr/bin/env python3
"""Start a real vLLM OpenAI-compatible server (CPU) on the tiny model setup.py made.

    python3 tools/real_vllm/serve.py [--port 8000]   serve until Ctrl-C

The test tier imports `running_server()` from here (tests/vllm/conftest.py), so a server
started by hand and one started by pytest are the same command with the same environment.
Needs nothing but the standard library; run setup.py first.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = REPO_ROOT / ".cache" / "real_vllm"
PYTHON = CACHE / "venv" / "bin" / "python"
MODEL = CACHE / "model"

SERVED_MODEL_NAME = "Qwen/Qwen-7B-Chat"
MAX_MODEL_LEN = 1024
# REAL_VLLM.md: 70-90 s to /health 200 cold, 40-55 s with a warm compile cache; the
# margin covers a loaded 2-core machine.
STARTUP_DEADLINE_S = 240.0
STOP_GRACE_S = 20.0


class ServerError(Exception):
    """The server could not be started (its log tail is in the message)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env() -> dict[str, str]:
    """The environment REAL_VLLM.md prescribes, with every cache inside .cache/real_vllm."""
    env = dict(os.environ)
    # The project's PYTHONPATH (platform/, the repo) has no business in vLLM's venv.
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_CPU_OMP_THREADS_BIND": "auto",
            "VLLM_CACHE_ROOT": str(CACHE / "vllm-cache"),
            "HF_HOME": str(CACHE / "hf-home"),
            "TORCHINDUCTOR_CACHE_DIR": str(CACHE / "inductor-cache"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def server_argv(port: int, *, extra: list[str] | None = None) -> list[str]:
    return [
        str(PYTHON),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(MODEL),
        "--served-model-name",
        SERVED_MODEL_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        str(MAX_MODEL_LEN),
        "--dtype",
        "float32",
        *(extra or []),
    ]


def check_built() -> None:
    missing = [p for p in (PYTHON, MODEL / "config.json") if not p.exists()]
    if missing:
        raise ServerError(
            f"real vLLM is not set up ({', '.join(map(str, missing))} missing): "
            "run `python3 tools/real_vllm/setup.py`"
        )


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2.0) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _tail(log: Path, lines: int = 60) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the whole process group (API server, engine core, workers), then SIGKILL."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    # The engine core can outlive the API server for a moment; the group goes with it.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def running_server(
    log: Path,
    *,
    port: int | None = None,
    deadline_s: float = STARTUP_DEADLINE_S,
    extra_args: list[str] | None = None,
) -> Iterator[str]:
    """Start the server, wait for /health 200, yield its base URL, stop it on exit."""
    check_built()
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log, "wb") as out:
        # Own session: stop() can signal the API server and its engine processes together.
        process = subprocess.Popen(
            server_argv(port, extra=extra_args),
            cwd=CACHE,
            env=server_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        while not _healthy(url):
            if process.poll() is not None:
                raise ServerError(
                    f"vLLM exited with {process.returncode} before /health answered; "
                    f"log {log}:\n{_tail(log)}"
                )
            if time.monotonic() - started > deadline_s:
                raise ServerError(
                    f"vLLM /health not 200 within {deadline_s:.0f}s; log {log}:\n{_tail(log)}"
                )
            time.sleep(0.5)
        with open(log, "a") as out:
            out.write(f"\n[serve.py] /health 200 after {time.monotonic() - started:.1f}s\n")
        yield url
    finally:
        stop(process)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log", type=Path, default=CACHE / "serve.log")
    parser.add_argument("--deadline", type=float, default=STARTUP_DEADLINE_S)
    args = parser.parse_args(argv)
    # Run in the background, `kill PID` must still stop the server (its own session).
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    started = time.monotonic()
    print(f"starting vLLM on port {args.port}; log {args.log}", flush=True)
    try:
        with running_server(args.log, port=args.port, deadline_s=args.deadline) as url:
            took = time.monotonic() - started
            print(f"vLLM serving {SERVED_MODEL_NAME} on {url} (healthy after {took:.1f}s)")
            print("Ctrl-C (or SIGTERM) stops it.", flush=True)
            while True:
                time.sleep(3600)
    except ServerError as exc:
        print(f"serve.py: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("serve.py: vLLM stopped", flush=True)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


if __name__ == "__main__":
    sys.exit(main())
