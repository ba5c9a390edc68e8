"""Helpers for end-to-end tests of the `dingtalk_stream` management command.

`stream_command` runs the real command as a subprocess against the pytest-django test
database; `blocked_inserts` tells, from PostgreSQL itself, that some session waits for a
lock on a table (used to hold a message mid-store and look at the gateway meanwhile).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import processes
from tests.support.waiting import wait_until

READY_LINE = "dingtalk_stream: watching"
STOPPED_LINE = "dingtalk_stream: stopped"
# Logged by StreamSupervisor.stop_all before it cancels the connections.
STOPPING_LINE = "stopping 1 stream connection(s)"


@dataclass
class StreamCommand:
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None


def subprocess_database_url() -> str:
    """DATABASE_URL for a subprocess: the test database pytest-django created."""
    from django.conf import settings
    from django.db import connection

    return processes.database_url_for(settings.DATABASE_URL, connection.settings_dict["NAME"])


@contextmanager
def stream_command(
    tmp_dir: Path,
    *,
    gateway_base: str,
    refresh_s: float = 0.5,
    extra_env: dict[str, str] | None = None,
) -> Iterator[StreamCommand]:
    """`manage.py dingtalk_stream --refresh <s>`, ready once its signal handlers are set."""
    from django.conf import settings

    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": subprocess_database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "SWITCHBOARD_DINGTALK_API_BASE": gateway_base,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra_env or {})
    log = tmp_dir / "dingtalk_stream.log"
    argv = [sys.executable, "manage.py", "dingtalk_stream", "--refresh", f"{refresh_s:g}"]
    with processes.running(argv, env=env, log=log) as process:
        command = StreamCommand(process, log)

        def ready() -> bool:
            if not command.alive():
                raise AssertionError(f"dingtalk_stream exited early:\n{command.output()}")
            return READY_LINE in command.output()

        wait_until(ready, timeout=30, what="the dingtalk_stream command to start")
        yield command


def blocked_inserts(cursor: Any, table: str) -> int:
    """Sessions waiting for a lock on `table` (a blocked INSERT shows up here)."""
    cursor.execute(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = %s::regclass"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        [table],
    )
    return int(cursor.fetchone()[0])
