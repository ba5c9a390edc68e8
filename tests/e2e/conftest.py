"""The Celery worker process most end-to-end modules share (one per module)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import processes


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
