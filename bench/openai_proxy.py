"""What does an OpenAI-compatible proxy add? Switchboard against LiteLLM's proxy, one run.

Three targets answer the same ``POST /v1/chat/completions`` requests in one run:

- ``direct``: the simulator itself (`python -m inference.simulator`), configured to be
  fast (``--time-scale 0``: no modelled delays; 16-token replies), so that what a proxy
  adds is not hidden behind model time;
- ``litellm``: LiteLLM's proxy (``litellm[proxy]`` from PyPI) in its own virtual
  environment under ``.cache/bench-litellm/`` (made on first use), one uvicorn worker, a
  config that maps the model name to the simulator, a master key, no database: started
  offline, with its telemetry vetoed and every run-time download replaced by the copy
  the package ships;
- ``switchboard``: Switchboard's OpenAI-compatible endpoint, served by
  ``switchboard.asgi:application`` under uvicorn (one worker), with a tenant, a bot, a
  licence with generous limits and an API key made for the run in its own PostgreSQL
  database and Redis database. Its metering (admission, MAU, the message ledger) stays
  on. It skips itself, saying so, while the endpoint answers 404.

Two measurements, both side by side in one run:

1. Concurrency 1. One client sends N requests to each target, one at a time. The
   targets take turns request by request, in an order that rotates every round, so
   drift (other processes, CPU frequency) falls on all of them alike. Non-streamed
   requests give p50/p99 latency; streamed ones give time to first token and total
   time. "Added" is the target's percentile minus the simulator's, from the same run.
2. Saturation. C clients (asyncio + httpx, keep-alive) send non-streamed requests as
   fast as the target answers for a fixed time; blocks of the targets alternate
   (A B C C B A …). Reported: requests per CPU-second of the proxy's process tree
   (``/proc/<pid>/stat``, its own time, its live descendants' and the children it
   reaped), and beside it the CPU per request of the simulator, of PostgreSQL (its
   server processes and the backends of the benchmark's database), of Redis and of this
   load generator.

Run ``python -m bench.openai_proxy --help`` for the knobs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import redis
from psycopg import sql

from bench._sim import (
    REPO_ROOT,
    _die_with_parent_hook,
    command_line,
    percentile,
    sigterm_as_exit,
    simulators,
    table,
)

MODEL = "Qwen/Qwen-7B-Chat"
# One model name for both proxies: LiteLLM's model_name and Switchboard's bot name.
PROXY_MODEL = "bench-bot"
TARGETS = ("direct", "litellm", "switchboard")
# Exact, so that a later release (or a yanked, compromised one) never slips in unseen.
# Newer ones pin `litellm-proxy` or `litellm-proxy-extras` versions PyPI does not serve.
LITELLM_SPEC = "litellm[proxy]==1.108.7"
LITELLM_DIR = REPO_ROOT / ".cache" / "bench-litellm"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/sw_bench_openai"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/7"
# No modelled delays and short replies: what is left of a request is HTTP and Python.
SIMULATOR_ARGS = ["--time-scale", "0", "--reply-min-tokens", "8", "--reply-max-tokens", "16"]
PROMPT = "Reply with a short greeting for a benchmark; one line is enough."
# Every run-time download LiteLLM would make, replaced by the copy in the package. The
# model cost map is the one it needs to start offline at all.
LITELLM_OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_TELEMETRY_DISABLED": "True",
    "HF_HUB_OFFLINE": "1",
    # Errors only: uvicorn's access log (one line per request) is off for both proxies.
    "LITELLM_LOG": "ERROR",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- processes and their CPU ------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ")".
    return text.rsplit(")", 1)[1].split()


def _all_stats() -> dict[int, list[str]]:
    stats = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                stats[int(entry.name)] = fields
    return stats


def tree_cpu_seconds(root: int) -> float:
    """CPU of `root`, its live descendants and every child any of them has reaped.

    A child that exits between two readings moves from the live sum into its parent's
    cutime/cstime, so the difference of two readings counts it exactly once.
    """
    stats = _all_stats()
    if root not in stats:
        return math.nan
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        # After the ")" the fields start at 3 (state): ppid is 4, utime 14, stime 15,
        # cutime 16, cstime 17.
        children.setdefault(int(fields[1]), []).append(pid)
    total = 0
    todo = [root]
    while todo:
        pid = todo.pop()
        fields = stats[pid]
        total += sum(int(fields[i]) for i in (11, 12, 13, 14))
        todo.extend(children.get(pid, ()))
    return total / CLK_TCK


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    """A server this benchmark started: its own session, so it is stopped as a group."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.process.pid)

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        process = self.process
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@contextlib.contextmanager
def service(
    name: str, argv: Sequence[str], *, env: dict[str, str], cwd: Path, log_dir: Path
) -> Iterator[Service]:
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # A session of its own: Ctrl-C reaches only this script, whose `finally`
            # then stops the server and anything it started, in order.
            start_new_session=True,
            preexec_fn=_die_with_parent_hook(),
        )
    svc = Service(name, process, log_path)
    try:
        yield svc
    finally:
        svc.stop()


def wait_healthy(svc: Service, url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as http:
        while True:
            if svc.process.poll() is not None:
                raise RuntimeError(f"{svc.name} exited ({svc.process.returncode}):\n{svc.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if http.get(url).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{svc.name} not healthy after {timeout_s:.0f}s:\n{svc.tail()}")
            time.sleep(0.2)


# -- LiteLLM --------------------------------------------------------------------------------


def ensure_litellm(spec: str) -> Path:
    """The LiteLLM virtual environment's python, installing `spec` on first use."""
    venv = LITELLM_DIR / "venv"
    python = venv / "bin" / "python"
    marker = LITELLM_DIR / "installed-spec.txt"
    if python.exists() and marker.exists() and marker.read_text().strip() == spec:
        return python
    LITELLM_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LITELLM_DIR / "install.log"
    print(f"installing {spec} into {venv} (once; about a minute) ...", file=sys.stderr)
    with open(log_path, "wb") as log:
        # The base interpreter, not this venv's: LiteLLM's pins must not meet ours.
        base = getattr(sys, "_base_executable", sys.executable)
        steps = [
            [base, "-m", "venv", "--clear", str(venv)],
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", spec],
        ]
        for argv in steps:
            done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)} failed; see {log_path}")
    marker.write_text(spec + "\n")
    return python


def litellm_version(python: Path) -> str:
    out = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def litellm_config(sim_url: str, master_key: str) -> str:
    return (
        "model_list:\n"
        f"  - model_name: {PROXY_MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {sim_url}/v1\n"
        "      api_key: simulator-takes-any-key\n"
        "general_settings:\n"
        f"  master_key: {master_key}\n"
    )


def litellm_env(python: Path) -> dict[str, str]:
    # A clean environment: an inherited DATABASE_URL or REDIS_HOST would switch on
    # LiteLLM's database (Prisma, which downloads engines) or its Redis cache.
    env = {
        "PATH": f"{python.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        **LITELLM_OFFLINE_ENV,
    }
    return env


# -- Switchboard ----------------------------------------------------------------------------

_SETUP = """
import json, sys, uuid
from datetime import timedelta

import django

django.setup()
from django.utils import timezone

from switchboard.apikeys.services import api_key_create
from switchboard.bots.models import Bot
from switchboard.licensing.models import Licence
from switchboard.pool.models import InferenceEndpoint
from switchboard.tenants.models import Tenant

sim_url, model, bot_name, max_tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
now = timezone.now()
# Only this run's simulator in the pool (older runs' rows point at dead ports).
InferenceEndpoint.objects.exclude(url=sim_url).update(enabled=False)
InferenceEndpoint.objects.update_or_create(
    url=sim_url,
    defaults={"name": "bench-" + uuid.uuid4().hex[:8], "model": model, "enabled": True,
              "draining": False, "max_concurrency": 256},
)
tag = uuid.uuid4().hex[:8]
tenant = Tenant.objects.create(name="OpenAI proxy bench " + tag, slug="bench-openai-" + tag)
# Real limits, not "none", so admission takes its guarded, counted path; high enough
# that the benchmark is never refused.
Licence.objects.create(
    tenant=tenant, licence_id=uuid.uuid4(), key_id="bench", document="{}", issued_at=now,
    valid_from=now - timedelta(days=1), valid_until=now + timedelta(days=30),
    mau_limit=1_000_000_000, monthly_tokens=10**15, tenant_messages_per_minute=100_000_000,
    user_messages_per_minute=10_000_000, connector_kinds=[], max_bots=None, enforcement="hard",
)
# No system prompt: the caller's messages are the whole prompt, so the simulator gets the
# same prompt from all three targets.
Bot.objects.create(tenant=tenant, name=bot_name, model_name=model, max_tokens=max_tokens,
                   system_prompt="")
try:
    _, key = api_key_create(tenant=tenant, name="openai-proxy bench", scopes=["chat"])
except TypeError:  # before API keys had scopes
    _, key = api_key_create(tenant=tenant, name="openai-proxy bench")
print(json.dumps({"key": key, "tenant": str(tenant.pk)}))
"""


def _maintenance_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/postgres"))


def ensure_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(_maintenance_url(url), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def postgres_server_pid(url: str) -> int | None:
    """The postmaster of the server at `url`: its process tree is all of PostgreSQL."""
    # The maintenance database: the benchmark's own may not exist without Switchboard.
    with psycopg.connect(_maintenance_url(url), autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    fields = _stat_fields(int(row[0])) if row else None
    return int(fields[1]) if fields else None


def postgres_cpu_seconds(postmaster: int, database: str) -> float:
    """CPU of the PostgreSQL server that this benchmark's database can have caused.

    The postmaster itself, its background processes (WAL writer, checkpointer, …) and
    the backends connected to `database`; not the backends of other databases on the
    same server, which other work on a shared machine keeps busy. Backends that exit
    between readings are lost (their time moves into the postmaster's reaped-children
    total, shared by every database): Switchboard keeps its connections open
    (DATABASE_CONN_MAX_AGE), so its backends live through a block.
    """
    stats = _all_stats()
    own = stats.get(postmaster)
    if own is None:
        return math.nan
    total = int(own[11]) + int(own[12])
    for pid, fields in stats.items():
        if int(fields[1]) != postmaster:
            continue
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        # A backend's title is "postgres: CLUSTER: USER DATABASE HOST(PORT) STATE"; an
        # autovacuum worker's names its database too.
        is_backend = "(" in title or "[local]" in title or "autovacuum worker" in title
        if not is_backend or database in title.split():
            total += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return total / CLK_TCK


def redis_server_pid(url: str) -> int | None:
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


def celery_backlog(url: str) -> int:
    """Tasks waiting in Switchboard's Celery queues (no worker runs in this benchmark)."""
    client = redis.Redis.from_url(url)
    try:
        return sum(int(client.llen(q)) for q in ("celery", "chat", "default", "realtime"))
    finally:
        client.close()


def switchboard_env(database_url: str, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        DJANGO_SETTINGS_MODULE="switchboard.settings",
        PYTHONPATH=os.pathsep.join(["platform", "."]),
        LOG_LEVEL="WARNING",
        DEBUG="0",
    )
    return env


def setup_switchboard(sim_url: str, env: dict[str, str], max_tokens: int) -> tuple[str, str]:
    """Migrate, then make a tenant, bot, licence and key: (the key's plaintext, tenant id)."""
    python = sys.executable
    migrate = [python, "manage.py", "migrate", "--noinput", "-v", "0"]
    subprocess.run(migrate, cwd=REPO_ROOT, env=env, check=True)
    out = subprocess.run(
        [python, "-c", _SETUP, sim_url, MODEL, PROXY_MODEL, str(max_tokens)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"Switchboard set-up failed:\n{out.stderr[-3000:]}")
    made = json.loads(out.stdout.strip().splitlines()[-1])
    return str(made["key"]), str(made["tenant"])


def ledger_rows(url: str, tenant: str) -> int | None:
    """Usage records the run wrote: the proof that metering was on (None: unreadable)."""
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM metering_usagerecord WHERE tenant_id = %s", (tenant,)
            ).fetchone()
    except psycopg.Error as exc:  # the ledger's schema moved on: say so, keep the results
        print(f"  (ledger not read: {exc})", file=sys.stderr)
        return None
    return int(row[0]) if row else 0


# -- targets and load -----------------------------------------------------------------------


@dataclass
class Target:
    name: str
    url: str  # .../v1/chat/completions
    model: str
    headers: dict[str, str]
    # The proxy's process tree (None for the simulator itself, which is `direct`).
    cpu: Callable[[], float] | None = None


@dataclass
class Serial:
    """Concurrency 1: one target's samples, in ms."""

    latency: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    errors: int = 0


@dataclass
class Saturated:
    requests: int = 0
    errors: int = 0
    wall_s: float = 0.0
    proxy_cpu_s: float = 0.0
    sim_cpu_s: float = 0.0
    pg_cpu_s: float = 0.0
    redis_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_error: str = ""


def request_bodies(model: str, stream: bool, users: int, max_tokens: int) -> list[bytes]:
    """Encoded once: the load generator should spend its CPU on HTTP, not on JSON."""
    return [
        json.dumps(
            {
                "model": model,
                "messages": [{"role": "user", "content": PROMPT}],
                "max_tokens": max_tokens,
                "temperature": 0,
                "stream": stream,
                "user": f"bench-user-{u}",
            }
        ).encode()
        for u in range(users)
    ]


def _has_content(response: httpx.Response) -> bool:
    try:
        return bool(response.json()["choices"][0]["message"]["content"])
    except (ValueError, KeyError, IndexError, TypeError):
        return False


def _first_content(line: str) -> bool:
    if not line.startswith("data:"):
        return False
    payload = line[5:].strip()
    if payload == "[DONE]":
        return False
    try:
        choices = json.loads(payload).get("choices") or []
    except ValueError:
        return False
    return bool(choices and (choices[0].get("delta") or {}).get("content"))


def serial_one(
    client: httpx.Client, target: Target, body: bytes, stream: bool, stats: Serial
) -> None:
    t0 = time.perf_counter()
    try:
        if not stream:
            response = client.post(target.url, content=body, headers=target.headers)
            elapsed = (time.perf_counter() - t0) * 1000.0
            if response.status_code == 200 and _has_content(response):
                stats.latency.append(elapsed)
            else:
                stats.errors += 1
            return
        ttft = math.nan
        with client.stream("POST", target.url, content=body, headers=target.headers) as response:
            if response.status_code != 200:
                response.read()
                stats.errors += 1
                return
            for line in response.iter_lines():
                if math.isnan(ttft) and _first_content(line):
                    ttft = (time.perf_counter() - t0) * 1000.0
        total = (time.perf_counter() - t0) * 1000.0
        if math.isnan(ttft):
            stats.errors += 1
        else:
            stats.ttft.append(ttft)
            stats.total.append(total)
    except httpx.HTTPError:
        stats.errors += 1


def measure_serial(
    targets: Sequence[Target], requests: int, warmup: int, users: int, max_tokens: int
) -> dict[str, Serial]:
    bodies = {
        (t.name, stream): request_bodies(t.model, stream, users, max_tokens)
        for t in targets
        for stream in (False, True)
    }
    results = {t.name: Serial() for t in targets}
    clients = {t.name: httpx.Client(timeout=30.0) for t in targets}
    # The warm-up sends every end user at least once, so that the measured requests take
    # the returning user's path (Switchboard's first request of a user in a month also
    # counts them in MAU, a few more statements).
    warmup = max(warmup, users)
    try:
        for i in range(-warmup, requests):
            # Rotate who goes first, so no target always follows the same one.
            shift = i % len(targets)
            order = [*targets[shift:], *targets[:shift]]
            for stream in (False, True):
                for t in order:
                    stats = results[t.name] if i >= 0 else Serial()
                    body = bodies[(t.name, stream)][i % users]
                    serial_one(clients[t.name], t, body, stream, stats)
    finally:
        for client in clients.values():
            client.close()
    return results


Snapshot = dict[str, float]


async def _load(
    target: Target,
    bodies: Sequence[bytes],
    concurrency: int,
    warmup_s: float,
    seconds: float,
    snapshot: Callable[[], Snapshot],
) -> tuple[Saturated, Snapshot, Snapshot]:
    """`concurrency` clients in a loop: a warm-up (not counted), then `seconds` measured.

    The CPU snapshots are taken between the phases, when no request is in flight, so
    neither the warm-up nor the client's start-up falls into the measured block.
    """
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    result = Saturated()
    async with httpx.AsyncClient(timeout=60.0, limits=limits) as client:

        async def worker(index: int, until: float, record: bool) -> None:
            i = index
            while time.perf_counter() < until:
                body = bodies[i % len(bodies)]
                i += concurrency
                t0 = time.perf_counter()
                try:
                    response = await client.post(target.url, content=body, headers=target.headers)
                    ok = response.status_code == 200
                    if not ok and not result.first_error:
                        result.first_error = f"HTTP {response.status_code}: {response.text[:300]}"
                except httpx.HTTPError as exc:
                    ok = False
                    if not result.first_error:
                        result.first_error = repr(exc)
                if not record:
                    continue
                if ok:
                    result.latencies.append((time.perf_counter() - t0) * 1000.0)
                else:
                    result.errors += 1

        warm_until = time.perf_counter() + warmup_s
        await asyncio.gather(*(worker(i, warm_until, False) for i in range(concurrency)))
        before = snapshot()
        wall0 = time.perf_counter()
        until = wall0 + seconds
        await asyncio.gather(*(worker(i, until, True) for i in range(concurrency)))
        result.wall_s = time.perf_counter() - wall0
        after = snapshot()
    result.requests = len(result.latencies)
    return result, before, after


def host_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole host, from the first line of /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user time
    return float(total - idle), float(total)


@dataclass
class Meters:
    """CPU readers for where else a request spends CPU: simulator, PostgreSQL, Redis."""

    sim: Callable[[], float]
    postgres: Callable[[], float]
    redis: Callable[[], float]


def measure_saturated(
    targets: Sequence[Target],
    meters: Meters,
    args: argparse.Namespace,
) -> tuple[dict[str, Saturated], float]:
    """Alternated blocks per target; returns the results and the host's busy share."""
    results = {t.name: Saturated() for t in targets}
    bodies = {
        t.name: request_bodies(t.model, False, args.end_users, args.max_tokens) for t in targets
    }
    block_s = args.duration / args.blocks
    busy = total = 0.0
    for b in range(args.blocks):
        order = list(targets) if b % 2 == 0 else list(targets)[::-1]
        for t in order:
            proxy_cpu = t.cpu

            def snapshot(proxy_cpu: Callable[[], float] | None = proxy_cpu) -> Snapshot:
                host = host_busy()
                return {
                    "proxy_cpu_s": proxy_cpu() if proxy_cpu else 0.0,
                    "sim_cpu_s": meters.sim(),
                    "pg_cpu_s": meters.postgres(),
                    "redis_cpu_s": meters.redis(),
                    "client_cpu_s": time.process_time(),
                    "host_busy": host[0],
                    "host_total": host[1],
                }

            block, before, after = asyncio.run(
                _load(
                    t,
                    bodies[t.name],
                    args.concurrency,
                    args.warmup_s,
                    block_s,
                    snapshot,
                )
            )
            s = results[t.name]
            s.latencies.extend(block.latencies)
            s.requests += block.requests
            s.errors += block.errors
            s.wall_s += block.wall_s
            s.first_error = s.first_error or block.first_error
            for name in (
                "proxy_cpu_s",
                "sim_cpu_s",
                "pg_cpu_s",
                "redis_cpu_s",
                "client_cpu_s",
            ):
                setattr(s, name, getattr(s, name) + after[name] - before[name])
            busy += after["host_busy"] - before["host_busy"]
            total += after["host_total"] - before["host_total"]
            print(
                f"  saturation block {b + 1}/{args.blocks}: {t.name} done",
                file=sys.stderr,
            )
    return results, (busy / total if total else math.nan)


# -- report ---------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}"


def _added(target: Sequence[float], direct: Sequence[float], q: float) -> float:
    return percentile(target, q) - percentile(direct, q)


def _per_req_ms(cpu_s: float, requests: int) -> float:
    return cpu_s / requests * 1000.0 if requests else math.nan


def _rate(requests: int, cpu_s: float) -> float:
    return requests / cpu_s if cpu_s > 0 else math.nan


def _fmt_rate(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:,.0f}"


def print_serial(serial: dict[str, Serial]) -> None:
    direct = serial.get("direct")
    rows = []
    for name, s in serial.items():
        added50 = _added(s.latency, direct.latency, 50) if direct and name != "direct" else math.nan
        added99 = _added(s.latency, direct.latency, 99) if direct and name != "direct" else math.nan
        rows.append(
            [
                name,
                str(len(s.latency)),
                str(s.errors),
                _ms(percentile(s.latency, 50)),
                _ms(percentile(s.latency, 99)),
                _ms(added50),
                _ms(added99),
            ]
        )
    print("concurrency 1, non-streamed (ms):")
    print(
        table(
            ["target", "requests", "errors", "p50", "p99", "added p50", "added p99"],
            rows,
        )
    )
    print()
    rows = []
    for name, s in serial.items():
        other = name != "direct" and direct is not None
        rows.append(
            [
                name,
                str(len(s.ttft)),
                _ms(percentile(s.ttft, 50)),
                _ms(percentile(s.ttft, 99)),
                _ms(percentile(s.total, 50)),
                _ms(percentile(s.total, 99)),
                _ms(_added(s.ttft, direct.ttft, 50) if other else math.nan),
                _ms(_added(s.ttft, direct.ttft, 99) if other else math.nan),
                _ms(_added(s.total, direct.total, 50) if other else math.nan),
            ]
        )
    print("concurrency 1, streamed (ms; TTFT = first content token):")
    headers = [
        "target",
        "requests",
        "TTFT p50",
        "TTFT p99",
        "total p50",
        "total p99",
        "added TTFT p50",
        "added TTFT p99",
        "added total p50",
    ]
    print(table(headers, rows))


def print_saturated(sat: dict[str, Saturated], concurrency: int, host_share: float) -> None:
    rows = []
    for name, s in sat.items():
        proxy = name != "direct"
        with_stores = s.proxy_cpu_s + s.pg_cpu_s + s.redis_cpu_s
        rows.append(
            [
                name,
                str(concurrency),
                str(s.requests),
                str(s.errors),
                f"{s.requests / s.wall_s:.0f}" if s.wall_s else "—",
                _ms(percentile(s.latencies, 50)),
                _ms(percentile(s.latencies, 99)),
                _ms(_per_req_ms(s.proxy_cpu_s, s.requests)) if proxy else "—",
                _fmt_rate(_rate(s.requests, s.proxy_cpu_s)) if proxy else "—",
                _ms(_per_req_ms(s.sim_cpu_s, s.requests)),
                _ms(_per_req_ms(s.pg_cpu_s, s.requests)),
                _ms(_per_req_ms(s.redis_cpu_s, s.requests)),
                _fmt_rate(_rate(s.requests, with_stores)) if proxy else "—",
                _ms(_per_req_ms(s.client_cpu_s, s.requests)),
            ]
        )
    print(f"saturation, non-streamed (host CPU busy during the blocks: {host_share:.0%}):")
    headers = [
        "target",
        "clients",
        "requests",
        "errors",
        "req/s",
        "p50 ms",
        "p99 ms",
        "proxy CPU ms/req",
        "req per proxy CPU-s",
        "simulator CPU ms/req",
        "PostgreSQL CPU ms/req",
        "Redis CPU ms/req",
        "req per CPU-s, proxy+PG+Redis",
        "load generator CPU ms/req",
    ]
    print(table(headers, rows))
    for name, s in sat.items():
        if s.first_error:
            print(f"  {name}: first error: {s.first_error}")


def print_goals(serial: dict[str, Serial], sat: dict[str, Saturated]) -> None:
    if not {"direct", "litellm", "switchboard"} <= serial.keys():
        return
    d, lite, sw = serial["direct"], serial["litellm"], serial["switchboard"]
    rows = []

    def row(
        measure: str,
        ours: float,
        theirs: float,
        goal: str,
        ok: Callable[[float], bool],
        fmt: Callable[[float], str] = _ms,
    ) -> None:
        ratio = ours / theirs if theirs > 0 else math.nan
        met = "—" if math.isnan(ratio) else ("yes" if ok(ratio) else "no")
        rows.append([measure, fmt(ours), fmt(theirs), f"{ratio:.3f}", goal, met])

    for label, ours, theirs, q in (
        ("added latency p50, c=1 (ms)", sw.latency, lite.latency, 50),
        ("added latency p99, c=1 (ms)", sw.latency, lite.latency, 99),
        ("added TTFT p50, c=1 streamed (ms)", sw.ttft, lite.ttft, 50),
    ):
        base = d.ttft if "TTFT" in label else d.latency
        row(label, _added(ours, base, q), _added(theirs, base, q), "<= 0.25", lambda r: r <= 0.25)
    if {"litellm", "switchboard"} <= sat.keys():
        s_sw, s_lite = sat["switchboard"], sat["litellm"]
        row(
            "req per proxy CPU-s",
            _rate(s_sw.requests, s_sw.proxy_cpu_s),
            _rate(s_lite.requests, s_lite.proxy_cpu_s),
            ">= 4",
            lambda r: r >= 4,
            _fmt_rate,
        )
        row(
            "req per CPU-s, proxy+PostgreSQL+Redis",
            _rate(s_sw.requests, s_sw.proxy_cpu_s + s_sw.pg_cpu_s + s_sw.redis_cpu_s),
            _rate(s_lite.requests, s_lite.proxy_cpu_s + s_lite.pg_cpu_s + s_lite.redis_cpu_s),
            ">= 4",
            lambda r: r >= 4,
            _fmt_rate,
        )
    print("Switchboard against LiteLLM:")
    print(table(["measure", "switchboard", "litellm", "ratio", "goal", "met"], rows))


# -- main -----------------------------------------------------------------------------------


class Skip(Exception):
    """A target that cannot be measured in this checkout; the others still are."""


def start_switchboard(
    stack: contextlib.ExitStack, sim_url: str, args: argparse.Namespace, tmp: Path
) -> tuple[Target, str]:
    """Switchboard under uvicorn, probed once; (its target, the run's tenant id)."""
    ensure_database(args.database_url)
    env = switchboard_env(args.database_url, args.redis_url)
    key, tenant = setup_switchboard(sim_url, env, args.max_tokens)
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "switchboard.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    svc = stack.enter_context(service("switchboard", argv, env=env, cwd=REPO_ROOT, log_dir=tmp))
    base = f"http://127.0.0.1:{port}"
    wait_healthy(svc, f"{base}/healthz", 60)
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    url = f"{base}/v1/chat/completions"
    target = Target("switchboard", url, PROXY_MODEL, headers, svc.cpu_seconds)
    body = request_bodies(PROXY_MODEL, False, 1, args.max_tokens)[0]
    response = httpx.post(target.url, content=body, headers=headers, timeout=30.0)
    if response.status_code == 404:
        svc.stop()
        raise Skip("POST /v1/chat/completions answered 404: the endpoint is not built yet")
    if response.status_code != 200:
        svc.stop()
        raise Skip(f"probe answered HTTP {response.status_code}: {response.text[:500]}")
    return target, tenant


def machine() -> str:
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
        f"Python {sys.version.split()[0]}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )


def git_head() -> str:
    head = ["git", "rev-parse", "--short", "HEAD"]
    out = subprocess.run(head, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    status = ["git", "status", "--porcelain", "--untracked-files=no"]
    dirty = subprocess.run(status, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def run(args: argparse.Namespace) -> int:
    print(f"command: {command_line()}")
    print(f"machine: {machine()}; commit {git_head()}")
    print(f"simulator: python -m inference.simulator {' '.join(SIMULATOR_ARGS)}")
    print(f"requests: {args.max_tokens} max tokens, {args.end_users} distinct `user` values")
    skipped: dict[str, str] = {}
    with (
        sigterm_as_exit(),
        tempfile.TemporaryDirectory(prefix="switchboard-bench-openai-") as tmp_name,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(tmp_name)
        sim = stack.enter_context(simulators(1, SIMULATOR_ARGS))[0]
        targets: list[Target] = []
        if "direct" in args.targets:
            headers = {"content-type": "application/json"}
            targets.append(Target("direct", f"{sim.url}/v1/chat/completions", MODEL, headers))
        if "litellm" in args.targets:
            python = ensure_litellm(args.litellm_spec)
            master_key = "sk-" + secrets.token_hex(16)
            config = tmp / "litellm.yaml"
            config.write_text(litellm_config(sim.url, master_key))
            port = free_port()
            argv = [
                str(python.parent / "litellm"),
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--num_workers",
                "1",
            ]
            env = litellm_env(python)
            print(f"LiteLLM {litellm_version(python)} ({args.litellm_spec}), started as:")
            print("  " + " ".join(f"{k}={v}" for k, v in LITELLM_OFFLINE_ENV.items()))
            print("  litellm " + " ".join(argv[1:]))
            print(
                "  config: " + litellm_config(sim.url, "sk-…").strip().replace("\n", "\n          ")
            )
            svc = stack.enter_context(service("litellm", argv, env=env, cwd=tmp, log_dir=tmp))
            wait_healthy(svc, f"http://127.0.0.1:{port}/health/liveliness", 180)
            headers = {"authorization": f"Bearer {master_key}", "content-type": "application/json"}
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            targets.append(Target("litellm", url, PROXY_MODEL, headers, svc.cpu_seconds))
        backlog0 = 0
        tenant = ""
        if "switchboard" in args.targets:
            try:
                target, tenant = start_switchboard(stack, sim.url, args, tmp)
                targets.append(target)
                backlog0 = celery_backlog(args.redis_url)
                print(
                    "Switchboard: uvicorn switchboard.asgi:application (1 worker, "
                    f"--no-access-log, LOG_LEVEL=WARNING), {args.database_url}, {args.redis_url}"
                )
            except Skip as exc:
                skipped["switchboard"] = str(exc)
                print(f"switchboard: skipped: {exc}", file=sys.stderr)

        pg_pid = _try(lambda: postgres_server_pid(args.database_url))
        pg_database = urlsplit(args.database_url).path.lstrip("/")
        redis_pid = _try(lambda: redis_server_pid(args.redis_url))
        meters = Meters(
            sim=sim.cpu_seconds,
            postgres=(lambda: postgres_cpu_seconds(pg_pid, pg_database))
            if pg_pid
            else (lambda: math.nan),
            redis=(lambda: tree_cpu_seconds(redis_pid)) if redis_pid else (lambda: math.nan),
        )
        print(f"targets: {', '.join(t.name for t in targets)}", file=sys.stderr)
        serial = measure_serial(
            targets, args.requests, args.warmup_requests, args.end_users, args.max_tokens
        )
        print("  concurrency 1 done", file=sys.stderr)
        sat, host_share = measure_saturated(targets, meters, args)
        backlog = celery_backlog(args.redis_url) - backlog0 if "switchboard" in sat else 0
        ledger = ledger_rows(args.database_url, tenant) if "switchboard" in sat else 0

    print()
    print_serial(serial)
    print()
    print_saturated(sat, args.concurrency, host_share)
    print()
    print_goals(serial, sat)
    print()
    print("Notes:")
    print(
        "- PostgreSQL CPU: the postmaster, its background processes and the backends "
        "of the benchmark's database (not other databases' backends). Redis CPU: the "
        "whole server, all databases. LiteLLM uses neither here, so its (and direct's) "
        "columns show what background work and other users cost meanwhile."
    )
    if "switchboard" in sat and ledger is not None:
        measured = sum(len(getattr(serial["switchboard"], a)) for a in ("latency", "ttft"))
        measured += sat["switchboard"].requests
        print(
            f"- Metering was on: Switchboard's ledger holds {ledger} usage records for this "
            f"run's tenant, for {measured} measured requests plus the warm-ups and the probe."
        )
    if backlog > 0:
        print(
            f"- {backlog} Celery tasks were enqueued by Switchboard during the run and not "
            "run (no worker in this benchmark): their cost is not in these numbers."
        )
    for name, reason in skipped.items():
        print(f"- {name} skipped: {reason}")
    return 0


def _try(fn: Callable[[], int | None]) -> int | None:
    try:
        return fn()
    except (OSError, ValueError, KeyError, psycopg.Error, redis.RedisError) as exc:
        # A server we only meter: the run goes on without its column.
        print(f"  (no CPU meter: {exc})", file=sys.stderr)
        return None


def _targets(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in TARGETS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"targets are {', '.join(TARGETS)}; got {text!r}")
    return [t for t in TARGETS if t in names]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.openai_proxy",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--targets", type=_targets, default=list(TARGETS), help="comma-separated")
    parser.add_argument(
        "--requests", type=int, default=500, help="per target and kind (plain, streamed) at c=1"
    )
    parser.add_argument(
        "--warmup-requests", type=int, default=20, help="per target at c=1 (at least --end-users)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=32, help="clients in the saturation phase"
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="measured seconds per target at saturation"
    )
    parser.add_argument("--blocks", type=int, default=2, help="alternated blocks per target")
    parser.add_argument("--warmup-s", type=float, default=1.0, help="before each block")
    parser.add_argument("--max-tokens", type=int, default=16, help="tokens per reply")
    parser.add_argument("--end-users", type=int, default=64, help="distinct `user` values")
    parser.add_argument("--litellm-spec", default=LITELLM_SPEC, help="pip requirement")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 20 requests, 8 end users, 2 s at 16 clients in one block",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.requests, args.warmup_requests, args.end_users = 20, 3, 8
        args.concurrency, args.duration, args.blocks, args.warmup_s = 16, 2.0, 1, 0.5
    return run(args)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        sys.exit(130)
