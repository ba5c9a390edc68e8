"""Helpers for the Tmall Genie (AliGenie) ingress and voice tests.

`processes.simulator` takes no performance flags and `processes.celery_worker` always
consumes every queue, so the voice tests start their own: a simulator with a slow model,
and a worker that consumes only the `realtime` queue (a generation sent to any other
queue then never runs, which the tests would see).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.support import processes
from tests.support.waiting import wait_until

_SUCCESS = re.compile(r"^vllm:request_success_total\{[^}]*\}\s+([0-9.eE+-]+)$", re.MULTILINE)
_RUNNING = re.compile(r"^vllm:num_requests_running\{[^}]*\}\s+([0-9.eE+-]+)$", re.MULTILINE)


def ingress_url(base_url: str, connector: Any, *, token: str | None = None) -> str:
    """The connector's AliGenie webhook URL on `base_url` (its own token unless given)."""
    secret = connector.path_token if token is None else token
    return f"{base_url}/hooks/aligenie/{connector.pk}/{secret}/"


@contextmanager
def simulator_process(tmp_dir: Path, *, name: str, flags: Sequence[str] = ()) -> Iterator[str]:
    """A simulator process started with extra command-line flags; yields its base URL."""
    port = processes.free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "inference.simulator", "--port", str(port), "--name", name]
    log = tmp_dir / f"{name}.log"
    with processes.running([*argv, *flags], log=log) as process:

        def healthy() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"simulator {name} exited:\n{log.read_text()}")
            try:
                return httpx.get(f"{url}/health", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout=30, what=f"simulator {name}")
        yield url


def _metric_sum(url: str, pattern: re.Pattern[str]) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5.0).text
    return sum(float(value) for value in pattern.findall(text))


def completions_finished(url: str) -> int:
    """Chat completions the simulator at `url` has finished, whatever their finish reason."""
    return int(_metric_sum(url, _SUCCESS))


def completions_running(url: str) -> int:
    """Chat completions the simulator at `url` is generating right now."""
    return int(_metric_sum(url, _RUNNING))


def active_queues(worker: processes.Worker) -> set[str]:
    """The queue names `worker` consumes, as it reports them itself."""
    from switchboard import celery_app

    replies = celery_app.control.inspect(destination=[worker.hostname], timeout=5).active_queues()
    assert replies and worker.hostname in replies, f"no answer from {worker.hostname}"
    return {queue["name"] for queue in replies[worker.hostname]}
