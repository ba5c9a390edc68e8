"""docker/entrypoint.py run outside Docker, as CI must (it has no Docker engine): the
roles really start against this machine's PostgreSQL and Redis, answer, and stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy import support
from tests.support.processes import database_url_for, free_port
from tests.support.waiting import wait_until

VENDOR = support.REPO_ROOT / "platform/switchboard/console/static/console/vendor"


@dataclass(frozen=True)
class Started:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass(frozen=True)
class Deployment:
    """The environment a container of the stack gets, pointed at the test database."""

    env: dict[str, str]
    tmp: Path

    def run(
        self, *argv: str, timeout: float = 120, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(support.ENTRYPOINT), *argv],
            env={**self.env, **extra},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    @contextmanager
    def started(self, *argv: str, **extra: str) -> Iterator[Started]:
        """The role running in the background; stopped with SIGTERM, as Docker stops it."""
        log_path = self.tmp / f"{'-'.join(argv)}-{free_port()}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, str(support.ENTRYPOINT), *argv],
                env={**self.env, **extra},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                yield Started(process, log_path)
            finally:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture(scope="module")
def deployment(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    from django.conf import settings

    tmp = tmp_path_factory.mktemp("deploy")
    env = {
        key: value
        for key, value in os.environ.items()
        # Only what the image would have: none of the developer's overrides.
        if not key.startswith(("DJANGO_", "SWITCHBOARD_", "PYTEST")) and key != "PYTHONPATH"
    }
    env.update(
        {
            "DATABASE_URL": database_url_for(
                settings.DATABASE_URL, settings.DATABASES["default"]["NAME"]
            ),
            "REDIS_URL": settings.REDIS_URL,
            "SECRET_KEY": "deploy-test-secret",
            "SWITCHBOARD_ENCRYPTION_KEY": ",".join(settings.SWITCHBOARD_ENCRYPTION_KEYS),
            # As in the image: scratch files outside the checkout, static files collected.
            "SWITCHBOARD_VAR_DIR": str(tmp / "var"),
            "STATIC_ROOT": str(tmp / "static"),
            "WHITENOISE_USE_FINDERS": "false",
            "LOG_LEVEL": "WARNING",
        }
    )
    return Deployment(env=env, tmp=tmp)


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2.0)
    except httpx.HTTPError:
        return None


# --- refusals ---------------------------------------------------------------------------


def test_refuses_to_start_without_production_settings(deployment: Deployment) -> None:
    env = {k: v for k, v in deployment.env.items() if k not in ("SECRET_KEY", "REDIS_URL")}
    result = subprocess.run(
        [sys.executable, str(support.ENTRYPOINT), "web"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "REDIS_URL, SECRET_KEY" in result.stderr


def test_settings_may_come_from_files(deployment: Deployment, tmp_path: Path) -> None:
    secret = tmp_path / "secret_key"
    secret.write_text("from-a-file\n")
    env = {k: v for k, v in deployment.env.items() if k != "SECRET_KEY"}
    result = subprocess.run(
        [sys.executable, str(support.ENTRYPOINT), "manage", "check"],
        env={**env, "SECRET_KEY_FILE": str(secret)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "argv",
    [["nonsense"], ["worker", "gpu"], ["worker", "chat", "default"], ["manage"]],
    ids=["unknown-role", "unknown-queue", "two-arguments", "manage-alone"],
)
def test_bad_commands_are_usage_errors(deployment: Deployment, argv: list[str]) -> None:
    result = deployment.run("--print", *argv)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "entrypoint:" in result.stderr


def test_register_pool_needs_its_endpoints(deployment: Deployment) -> None:
    result = deployment.run("--print", "register-pool", SWITCHBOARD_POOL_ENDPOINTS="")
    assert result.returncode == 2
    assert "SWITCHBOARD_POOL_ENDPOINTS" in result.stderr


# --- one-shot jobs ----------------------------------------------------------------------


def test_migrate_runs_to_completion(deployment: Deployment) -> None:
    result = deployment.run("migrate")
    assert result.returncode == 0, result.stderr
    assert "No migrations to apply" in result.stdout


@pytest.mark.django_db(transaction=True)
def test_register_pool_registers_the_endpoints_idempotently(
    deployment: Deployment,
) -> None:
    from switchboard.pool.models import InferenceEndpoint

    spec = "gpu-a=http://gpu-a.pool.internal:8000,gpu-b=http://10.1.2.3:8000"
    for _ in range(2):
        result = deployment.run(
            "register-pool",
            SWITCHBOARD_POOL_ENDPOINTS=spec,
            MODEL="Qwen/Qwen2.5-7B-Instruct",
        )
        assert result.returncode == 0, result.stderr
    rows = {row.name: row for row in InferenceEndpoint.objects.all()}
    assert set(rows) == {"gpu-a", "gpu-b"}
    assert rows["gpu-a"].url == "http://gpu-a.pool.internal:8000"
    assert {row.model for row in rows.values()} == {"Qwen/Qwen2.5-7B-Instruct"}
    assert "unchanged gpu-a" in result.stdout


# --- servers ----------------------------------------------------------------------------


def _wait_for_web(started: Started, port: str) -> None:
    def answering() -> bool:
        assert started.process.poll() is None, started.log()
        response = _get(f"http://127.0.0.1:{port}/healthz")
        return response is not None and response.status_code == 200

    wait_until(answering, timeout=60, what="the web role to answer /healthz")


@pytest.fixture(scope="module")
def web(deployment: Deployment) -> Iterator[str]:
    """The `web` role, after the image build's `collectstatic`, on a free port."""
    collected = deployment.run("collectstatic", "--verbosity", "0")
    assert collected.returncode == 0, collected.stderr
    port = str(free_port())
    with deployment.started("web", WEB_HOST="127.0.0.1", WEB_PORT=port) as started:
        _wait_for_web(started, port)
        yield f"http://127.0.0.1:{port}"


def test_web_answers_healthz(web: str) -> None:
    response = httpx.get(f"{web}/healthz", timeout=5)
    assert response.json() == {"status": "ok"}


def test_web_reports_readiness_of_its_dependencies(web: str) -> None:
    response = httpx.get(f"{web}/readyz", timeout=15)
    body = response.json()
    # Real PostgreSQL, Redis and broker; no endpoint was ever found healthy here.
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "database": True,
        "redis": True,
        "broker": True,
        "pool": False,
    }
    assert response.status_code == 503


def test_web_serves_the_collected_static_files(web: str) -> None:
    for name in ("htmx.min.js", "chart.umd.js"):
        response = httpx.get(f"{web}/static/console/vendor/{name}", timeout=5)
        assert response.status_code == 200, name
        assert response.content == (VENDOR / name).read_bytes()


def test_web_healthcheck_passes_while_web_runs(deployment: Deployment, web: str) -> None:
    port = web.rsplit(":", 1)[1]
    assert deployment.run("healthcheck", "web", WEB_PORT=port).returncode == 0
    assert deployment.run("healthcheck", "web", WEB_PORT=str(free_port())).returncode == 1


def test_web_is_the_process_docker_signals(deployment: Deployment) -> None:
    """The entrypoint replaces itself with the server, so SIGTERM reaches the server
    and it shuts down by itself. Served under a production host name only, as a real
    installation is: the health check still gets in."""
    port = str(free_port())
    extra = {
        "WEB_HOST": "127.0.0.1",
        "WEB_PORT": port,
        "LOG_LEVEL": "info",
        "ALLOWED_HOSTS": "switchboard.example.com",
    }
    with deployment.started("web", **extra) as started:

        def healthy() -> bool:
            assert started.process.poll() is None, started.log()
            return deployment.run("healthcheck", "web", **extra).returncode == 0

        wait_until(healthy, timeout=60, what="the web role's health check to pass")
        plain = _get(f"http://127.0.0.1:{port}/healthz")
        assert plain is not None and plain.status_code == 400  # 127.0.0.1 is not allowed
        started.process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert started.process.wait(60) in (0, -signal.SIGTERM)
    assert "Finished server process" in started.log()


def test_worker_role_answers_a_ping_of_its_own_node_and_stops(
    deployment: Deployment, redis_client: Any
) -> None:
    from switchboard import celery_app

    # Leftovers of other tests would run in this worker.
    redis_client.delete("realtime")
    node = f"realtime@{socket.gethostname()}"
    with deployment.started("worker", "realtime", WORKER_CONCURRENCY="2") as started:

        def answering() -> bool:
            assert started.process.poll() is None, started.log()
            return bool(celery_app.control.ping(destination=[node], timeout=0.5))

        wait_until(answering, timeout=90, what="the realtime worker to answer a ping")
        assert deployment.run("healthcheck", "worker", "realtime").returncode == 0
        # Warm shutdown on SIGTERM, as `docker stop` sends it.
        started.process.send_signal(signal.SIGTERM)
        assert started.process.wait(60) == 0
    assert not celery_app.control.ping(destination=[node], timeout=0.5)
