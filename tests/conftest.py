from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from connectors.webhook import sign_headers
from tests.support import processes
from tests.support.receiver import CallbackReceiver

QUEUES = ("realtime", "chat", "default")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # CI runs every real component; a skip there means something silently did not run.
    if not os.environ.get("SWITCHBOARD_FAIL_ON_SKIP") or session.exitstatus != 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped:
        print(f"\n{skipped} test(s) skipped, and SWITCHBOARD_FAIL_ON_SKIP is set: failing.")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    # Settings start the embedded servers when DATABASE_URL / REDIS_URL are unset; the
    # test session stops what it started and leaves alone what someone else runs.
    from switchboard import embedded

    if "postgres" in embedded.STARTED_HERE:
        embedded.stop_postgres()
    if "redis" in embedded.STARTED_HERE:
        embedded.stop_redis()


@pytest.fixture(autouse=True)
def _fresh_worker_pool() -> Iterator[None]:
    # The per-process pool caches endpoints; tests replace them wholesale.
    yield
    from switchboard.pool.runtime import worker_pool_reset

    worker_pool_reset()


def pytest_configure(config: pytest.Config) -> None:
    _flush_retries_a_deadlock()


def _flush_retries_a_deadlock() -> None:
    """A transactional test ends with a TRUNCATE of every table, which locks them one by
    one. A server process writing its ledger row after the answer (the tenant API does)
    can hold one of those tables while waiting for another: PostgreSQL then aborts one
    side as a deadlock. If it aborted the flush, the write has finished meanwhile, and
    the flush is simply run again."""
    from django.core.management.base import CommandError
    from django.test import TransactionTestCase

    original = TransactionTestCase._fixture_teardown

    def teardown(self: TransactionTestCase) -> None:
        for attempt in range(5):
            try:
                original(self)
                return
            except CommandError as exc:
                if "deadlock detected" not in str(exc.__cause__) or attempt == 4:
                    raise

    TransactionTestCase._fixture_teardown = teardown  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _worker_settles(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test with a worker ends only once that worker has nothing queued or in hand.

    Otherwise a task still running (a retry, a delivery) holds row locks while the
    transactional test's TRUNCATE takes its table locks one by one: Postgres called
    that a deadlock once in CI and the flush failed. pytest-django's own autouse
    fixture sets the database up before this one, so this teardown runs before the
    flush.
    """
    yield
    if "worker" not in request.fixturenames:
        return
    from tests.support.waiting import wait_until

    client = request.getfixturevalue("redis_client")

    def idle() -> bool:
        # acks_late (settings) keeps a task in kombu's `unacked` hash until it has run,
        # so empty queues and an empty hash mean nothing is left to do. Asked twice,
        # because a message is briefly in neither while kombu moves it.
        for _ in range(2):
            if any(client.llen(queue) for queue in QUEUES) or client.hlen("unacked"):
                return False
        return True

    wait_until(idle, timeout=60, what="the worker to finish its tasks")


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def queued_tasks(redis_client: redis.Redis) -> Callable[[], int]:
    """How many task messages wait in the broker's queues right now."""
    return lambda: sum(int(redis_client.llen(queue)) for queue in QUEUES)


@pytest.fixture
def purge_queues(redis_client: redis.Redis) -> None:
    redis_client.delete(*QUEUES)


@pytest.fixture
def tenant(db: None) -> Any:
    from switchboard.tenants.models import Tenant

    return Tenant.objects.create(name="Acme", slug=f"acme-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def bot(tenant: Any) -> Any:
    from switchboard.bots.services import bot_create

    return bot_create(
        tenant=tenant,
        name="Helper",
        system_prompt="You are {terse}.",
        history_window=4,
        max_tokens=64,
    )


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    with CallbackReceiver() as r:
        yield r


@pytest.fixture
def connector(bot: Any, receiver: CallbackReceiver) -> Any:
    from switchboard.bots.services import connector_create_webhook

    return connector_create_webhook(
        bot=bot, name="Orders", callback_url=receiver.url, allow_private_callback=True
    )


@pytest.fixture
def post_webhook(live_server: Any) -> Callable[..., httpx.Response]:
    """POST a (by default correctly signed) webhook to a connector over real HTTP."""

    def post(
        connector: Any,
        payload: dict[str, Any] | bytes | str,
        *,
        secret: str | None = None,
        headers: dict[str, str] | None = None,
        sign: bool = True,
        connector_id: str | None = None,
    ) -> httpx.Response:
        if isinstance(payload, dict):
            body = json.dumps(payload)
        elif isinstance(payload, bytes):
            body = payload.decode("utf-8", errors="surrogateescape")
        else:
            body = payload
        raw = payload if isinstance(payload, bytes) else body.encode()
        sent: dict[str, str] = {"content-type": "application/json"}
        if sign:
            sent.update(
                sign_headers(
                    secret=secret or connector.secret, event_id=f"msg_{uuid.uuid4().hex}", body=body
                )
            )
        sent.update(headers or {})
        target = connector_id or str(connector.pk)
        return httpx.post(
            f"{live_server.url}/hooks/webhook/{target}/", content=raw, headers=sent, timeout=30
        )

    return post


@pytest.fixture(scope="session")
def simulator_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with processes.simulator(tmp_path_factory.mktemp("sim")) as url:
        yield url


@pytest.fixture
def endpoint(db: None, simulator_url: str) -> Any:
    from switchboard.pool.models import InferenceEndpoint

    return InferenceEndpoint.objects.create(name="sim-1", url=simulator_url)


@pytest.fixture(scope="session")
def worker_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("worker")


@pytest.fixture
def licence_for() -> Callable[..., Any]:
    """Put limits in force for a tenant: a ledger row as an import would write it
    (signing is tested in tests/licensing; here only the limits matter)."""
    from datetime import timedelta

    from django.utils import timezone

    from switchboard.licensing.models import Licence
    from switchboard.licensing.services import limits_cache_clear

    def make(tenant: Any, **limits: Any) -> Any:
        now = timezone.now()
        columns: dict[str, Any] = {
            "mau_limit": None,
            "monthly_tokens": None,
            "tenant_messages_per_minute": None,
            "user_messages_per_minute": None,
            "connector_kinds": [],
            "max_bots": None,
            "enforcement": "hard",
        }
        columns.update(limits)
        licence = Licence.objects.create(
            tenant=tenant,
            licence_id=uuid.uuid4(),
            key_id="test",
            document="{}",
            issued_at=now,
            valid_from=now - timedelta(days=1),
            valid_until=now + timedelta(days=365),
            **columns,
        )
        limits_cache_clear()
        return licence

    return make


@pytest.fixture(scope="module")
def worker(
    django_db_setup: None, django_db_blocker: Any, worker_tmp: Path, redis_client: Any
) -> Iterator[processes.Worker]:
    """A worker on the test database. Callbacks may go to local receivers and retry
    quickly; limits are read fresh, since tests put licences in force as they go.
    A module needing other settings defines its own `worker`."""
    from django.conf import settings

    redis_client.delete("realtime", "chat", "default")
    database_url = processes.database_url_for(
        settings.DATABASE_URL, settings.DATABASES["default"]["NAME"]
    )
    with processes.celery_worker(
        worker_tmp,
        database_url=database_url,
        redis_url=settings.REDIS_URL,
        extra_env={
            "SWITCHBOARD_WEBHOOK_RETRY": "exponential",
            "SWITCHBOARD_ALLOW_PRIVATE_CALLBACKS": "true",
            "SWITCHBOARD_CALLBACK_BACKOFF_BASE_S": "1",
            "SWITCHBOARD_CALLBACK_MAX_RETRIES": "2",
            "SWITCHBOARD_LIMITS_CACHE_S": "0",
        },
    ) as running:
        yield running
