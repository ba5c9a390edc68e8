#!/usr/bin/env python3
"""The platform image's entry point: one image, its role chosen by the command.

    entrypoint.py [--print] ROLE [ARGS ...]

Roles:
    web                  ASGI server (uvicorn): HTTP, webhooks, console, WebSockets
    worker [QUEUE,...]   Celery worker for the queues given (default: all three)
    beat                 Celery beat (exactly one per installation)
    dingtalk-stream      DingTalk Stream-mode client
    migrate              apply database migrations, then exit
    collectstatic        gather static files into STATIC_ROOT (the image build runs it)
    register-pool        register SWITCHBOARD_POOL_ENDPOINTS as inference endpoints, then exit
    simulator            simulated vLLM server (compose's `sim` profile; no GPU)
    manage ARGS ...      any Django management command (console_user, prune_conversations, ...)
    healthcheck ROLE     exit 0 when this container's ROLE answers (web: /healthz; worker:
                         a Celery ping of its own node), 1 otherwise

`--print` writes the exact command line the role would run and exits without running it.
CI has no Docker engine, so it runs this same file outside Docker (see tests/deploy/).
It needs only the standard library until it replaces itself with the role's process.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MANAGE = ROOT / "manage.py"
QUEUES = ("realtime", "chat", "default")
# Threads per worker process. Inference calls spend their time waiting on GPUs, so a
# queue's concurrency is how many replies it keeps in flight, not CPU parallelism.
DEFAULT_CONCURRENCY = {"realtime": 16, "chat": 32, "default": 8}
# Settings the platform must not start without: with DATABASE_URL / REDIS_URL unset it
# would start embedded servers inside the container, and without SECRET_KEY or
# SWITCHBOARD_ENCRYPTION_KEY every container would invent its own, so secrets
# encrypted by one process could not be read by the next.
REQUIRED = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "SWITCHBOARD_ENCRYPTION_KEY")
# Roles that run platform code against the database and Redis.
PLATFORM_ROLES = frozenset(
    {
        "web",
        "worker",
        "beat",
        "dingtalk-stream",
        "migrate",
        "collectstatic",
        "register-pool",
        "manage",
    }
)


class UsageError(Exception):
    pass


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _manage(*args: str) -> list[str]:
    return _python(str(MANAGE), *args)


def _queues(args: list[str]) -> list[str]:
    if len(args) > 1:
        raise UsageError("worker takes one argument: a comma-separated list of queues")
    queues = [q.strip() for q in (args[0] if args else ",".join(QUEUES)).split(",") if q.strip()]
    unknown = sorted(set(queues) - set(QUEUES))
    if unknown or not queues:
        raise UsageError(f"unknown queue(s) {unknown or queues}; queues are {', '.join(QUEUES)}")
    return queues


def worker_hostname(queues: list[str]) -> str:
    # One node name per queue set and host, so `healthcheck worker` can ping its own node
    # and `celery inspect` output says which queue a node serves.
    return f"{'-'.join(queues)}@{socket.gethostname()}"


def web(args: list[str]) -> list[str]:
    return _python(
        "-m",
        "uvicorn",
        "switchboard.asgi:application",
        "--host",
        _env("WEB_HOST", "0.0.0.0"),  # noqa: S104 (a container listens on its own address)
        "--port",
        _env("WEB_PORT", "8000"),
        "--workers",
        _env("WEB_WORKERS", "1"),
        # Behind a load balancer: trust X-Forwarded-For/-Proto from these addresses only.
        "--proxy-headers",
        "--forwarded-allow-ips",
        _env("FORWARDED_ALLOW_IPS", "127.0.0.1"),
        # Django's ASGI handler does not speak the lifespan protocol.
        "--lifespan",
        "off",
        "--timeout-graceful-shutdown",
        _env("WEB_GRACEFUL_SHUTDOWN_S", "20"),
        "--log-level",
        _env("LOG_LEVEL", "info").lower(),
        *args,
    )


def worker(args: list[str]) -> list[str]:
    queues = _queues(args)
    default = str(sum(DEFAULT_CONCURRENCY[q] for q in queues))
    return _python(
        "-m",
        "celery",
        "-A",
        "switchboard",
        "worker",
        # Threads, not prefork: the inference pool's admission queue, circuit breakers and
        # per-endpoint budgets live in the worker process and must be shared by every
        # task it runs (prefork would make one copy per child).
        "--pool",
        "threads",
        "--concurrency",
        _env("WORKER_CONCURRENCY", default),
        "--queues",
        ",".join(queues),
        "--hostname",
        worker_hostname(queues),
        # Gossip and mingle broadcast to every node; with many worker hosts that is noise,
        # and nothing here relies on it (remote control, and so ping, still works).
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        _env("LOG_LEVEL", "INFO").upper(),
    )


def beat(args: list[str]) -> list[str]:
    var = Path(_env("SWITCHBOARD_VAR_DIR", str(ROOT / "var")))
    return _python(
        "-m",
        "celery",
        "-A",
        "switchboard",
        "beat",
        "--schedule",
        str(var / "celerybeat-schedule"),
        "--loglevel",
        _env("LOG_LEVEL", "INFO").upper(),
        *args,
    )


def dingtalk_stream(args: list[str]) -> list[str]:
    return _manage("dingtalk_stream", *args)


def migrate(args: list[str]) -> list[str]:
    return _manage("migrate", "--noinput", *args)


def collectstatic(args: list[str]) -> list[str]:
    return _manage("collectstatic", "--noinput", *args)


def register_pool(args: list[str]) -> list[str]:
    spec = _env("SWITCHBOARD_POOL_ENDPOINTS", "")
    entries = [item.strip() for item in spec.split(",") if item.strip()]
    if not entries and not args:
        raise UsageError(
            "register-pool needs SWITCHBOARD_POOL_ENDPOINTS, e.g. "
            "'vllm-1=http://vllm-1:8000,vllm-2=http://vllm-2:8000'"
        )
    tuning: list[str] = []
    # Only when set: otherwise what an operator tuned in the admin survives a restart.
    if max_concurrency := _env("SWITCHBOARD_POOL_MAX_CONCURRENCY", ""):
        tuning = ["--max-concurrency", max_concurrency]
    return _manage(
        "pool_endpoint",
        "add",
        *entries,
        "--model",
        _env("MODEL", "Qwen/Qwen-7B-Chat"),
        *tuning,
        *args,
    )


def simulator(args: list[str]) -> list[str]:
    return _python(
        "-m",
        "inference.simulator",
        "--host",
        _env("SIM_HOST", "0.0.0.0"),  # noqa: S104
        "--port",
        _env("SIM_PORT", "8000"),
        "--name",
        _env("SIM_NAME", socket.gethostname()),
        "--model",
        _env("MODEL", "Qwen/Qwen-7B-Chat"),
        *args,
    )


def manage(args: list[str]) -> list[str]:
    if not args:
        raise UsageError("manage needs a management command, e.g. `manage console_user --help`")
    return _manage(*args)


ROLES: dict[str, Callable[[list[str]], list[str]]] = {
    "web": web,
    "worker": worker,
    "beat": beat,
    "dingtalk-stream": dingtalk_stream,
    "migrate": migrate,
    "collectstatic": collectstatic,
    "register-pool": register_pool,
    "simulator": simulator,
    "manage": manage,
}


def command_for(role: str, args: list[str]) -> list[str]:
    if role not in ROLES:
        raise UsageError(f"unknown role {role!r}; roles are {', '.join([*ROLES, 'healthcheck'])}")
    return ROLES[role](args)


def child_environment() -> dict[str, str]:
    env = dict(os.environ)
    # The platform's source roots, as pytest and manage.py use them: works in the image
    # (/app) and in a checkout, with or without the project installed.
    roots = [str(ROOT / "platform"), str(ROOT)]
    existing = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in roots]
    env["PYTHONPATH"] = os.pathsep.join([*roots, *existing])
    env.setdefault("DJANGO_SETTINGS_MODULE", "switchboard.settings")
    if env.get("LOG_LEVEL"):
        # Python's logging takes level names in capitals only; `info` would stop Django
        # from configuring logging at all.
        env["LOG_LEVEL"] = env["LOG_LEVEL"].strip().upper()
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def missing_settings(env: dict[str, str]) -> list[str]:
    return [name for name in REQUIRED if not (env.get(name) or env.get(f"{name}_FILE"))]


def _health_host() -> str:
    """A Host header web accepts: production ALLOWED_HOSTS rarely lists 127.0.0.1."""
    hosts = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "").split(",") if h.strip()]
    if not hosts or hosts[0] == "*":
        return "127.0.0.1"
    # ".example.com" allows example.com and its subdomains.
    return hosts[0].lstrip(".")


def healthcheck(args: list[str]) -> int:
    """Probe this container's own process; exit status is what Docker reads."""
    if not args:
        raise UsageError("healthcheck needs a role: web or worker [QUEUES]")
    role, rest = args[0], args[1:]
    if role == "web":
        import urllib.request

        port = _env("WEB_PORT", "8000")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/healthz", headers={"Host": _health_host()}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (loopback)
                return 0 if response.status == 200 else 1
        except OSError as exc:
            print(f"healthcheck web: {exc}", file=sys.stderr)
            return 1
    if role == "worker":
        node = worker_hostname(_queues(rest))
        probe = (
            "import sys; from switchboard import celery_app; "
            f"sys.exit(0 if celery_app.control.ping(destination=[{node!r}], timeout=5) else 1)"
        )
        env = child_environment()
        return subprocess.run(_python("-c", probe), env=env, timeout=30).returncode
    raise UsageError(f"no health check for role {role!r}")


def main(argv: list[str]) -> int:
    print_only = False
    if argv and argv[0] in {"--print", "--dry-run"}:
        print_only, argv = True, argv[1:]
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0 if argv else 2
    role, args = argv[0], argv[1:]
    try:
        if role == "healthcheck":
            if print_only:
                raise UsageError("healthcheck runs no command to print")
            return healthcheck(args)
        command = command_for(role, args)
    except UsageError as exc:
        print(f"entrypoint: {exc}", file=sys.stderr)
        return 2
    if print_only:
        print(shlex.join(command))
        return 0
    env = child_environment()
    if role in PLATFORM_ROLES and (missing := missing_settings(env)):
        print(
            f"entrypoint: {role} needs {', '.join(missing)} (or NAME_FILE pointing at a file "
            "holding it); see docker/.env.example",
            file=sys.stderr,
        )
        return 2
    os.chdir(ROOT)
    # Replace this process, so the role's server is the one that gets Docker's signals.
    os.execve(command[0], command, env)  # noqa: S606 (no shell: arguments pass untouched)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
