"""The README's promise: `up` runs everything on a fresh embedded default, `send` shows a
reply, Ctrl-C stops every process it started and the embedded servers it started."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from switchboard import embedded
from tests.support.processes import REPO_ROOT, free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e


def _lines(stream, sink: queue.Queue[str]) -> None:
    for line in iter(stream.readline, ""):
        sink.put(line)


def _refused(url: str) -> bool:
    try:
        httpx.get(url, timeout=1.0)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        return False
    return False


def test_up_serves_a_reply_and_ctrl_c_stops_everything(tmp_path: Path):
    var = tmp_path / "var"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "SWITCHBOARD_EMBEDDED_REDIS_DB"}
    }
    env.update({"SWITCHBOARD_VAR_DIR": str(var), "PYTHONUNBUFFERED": "1"})
    web, sim, callback = free_port(), free_port(), free_port()
    base = f"http://127.0.0.1:{web}"
    up = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "up",
            "--port",
            str(web),
            "--simulators",
            "1",
            "--simulator-port",
            str(sim),
            "--concurrency",
            "2",
            "--demo-callback-url",
            f"http://127.0.0.1:{callback}/callback",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(up.stdout, output), daemon=True).start()
    seen: list[str] = []

    def banner() -> bool:
        while not output.empty():
            seen.append(output.get())
        if up.poll() is not None:
            raise AssertionError("up exited early:\n" + "".join(seen))
        return any("Switchboard is running" in line for line in seen)

    try:
        wait_until(banner, timeout=120, what="the `up` banner")
        wait_until(
            lambda: any("dev.py send" in line for line in seen) or banner(),
            timeout=5,
            what="the ready command",
        )
        text = "".join(seen)
        assert f"{base}/admin/" in text and "user admin" in text and "password" in text
        assert "dev.py send" in text

        sent = subprocess.run(
            [
                sys.executable,
                "manage.py",
                "demo_send",
                "ping from the test",
                "--base-url",
                base,
                "--timeout",
                "60",
            ],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "< [simulated" in sent.stdout and "ping from the test" in sent.stdout
        assert "tokens" in sent.stdout
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
            raise

    assert up.returncode == 0
    assert _refused(f"{base}/healthz")
    assert _refused(f"http://127.0.0.1:{sim}/health")
    assert not embedded.postgres_running(var)
    assert not embedded.redis_running(var)
