"""Real processes for end-to-end tests: simulator and Celery worker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def running(
    argv: list[str], *, env: dict[str, str] | None = None, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def simulator(tmp_dir: Path, *, name: str = "sim-1") -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "inference.simulator", "--port", str(port), "--name", name]
    with running(argv, log=tmp_dir / f"{name}.log") as process:
        wait_until(
            lambda: process.poll() is not None or _healthy(f"{url}/health"),
            timeout=30,
            what=f"simulator {name}",
        )
        assert process.poll() is None, (tmp_dir / f"{name}.log").read_text()
        yield url


def database_url_for(base_url: str, test_db_name: str) -> str:
    """The platform's DATABASE_URL pointed at the test database pytest-django made."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path=f"/{test_db_name}"))


@dataclass(frozen=True)
class Worker:
    """A running Celery worker process: its Celery hostname and its log file."""

    hostname: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def celery_worker(
    tmp_dir: Path,
    *,
    database_url: str,
    redis_url: str,
    extra_env: dict[str, str] | None = None,
    queues: Sequence[str] = ("realtime", "chat", "default"),
) -> Iterator[Worker]:
    from switchboard import celery_app

    env = dict(os.environ)
    env.update({"DATABASE_URL": database_url, "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"})
    env.update(extra_env or {})
    hostname = f"test-{os.getpid()}-{free_port()}@localhost"
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "switchboard",
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        "4",
        "--queues",
        ",".join(queues),
        "--hostname",
        hostname,
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        "INFO",
    ]
    log = tmp_dir / "worker.log"
    with running(argv, env=env, log=log) as process:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"worker exited:\n{log.read_text()}")
            return bool(celery_app.control.ping(destination=[hostname], timeout=0.5))

        wait_until(ready, timeout=60, what="the Celery worker to answer a ping")
        yield Worker(hostname=hostname, log=log)


@contextmanager
def web_server(
    tmp_dir: Path,
    *,
    database_url: str,
    redis_url: str,
    extra_env: dict[str, str] | None = None,
) -> Iterator[str]:
    """The ASGI app (HTTP and WebSockets) under uvicorn, as in production; its base URL.

    pytest-django's live server speaks WSGI only, so pages that open a WebSocket (the
    console's test chat) need this one.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env.update({"DATABASE_URL": database_url, "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"})
    env.update(extra_env or {})
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "switchboard.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    log = tmp_dir / "web.log"
    with running(argv, env=env, log=log) as process:
        wait_until(
            lambda: process.poll() is not None or _healthy(f"{url}/healthz"),
            timeout=60,
            what="the web server",
        )
        assert process.poll() is None, log.read_text()
        yield url
