from __future__ import annotations

import signal
import time
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from switchboard import celery_app, embedded
from switchboard.core.demo import DEMO_CALLBACK_URL, demo_seed
from switchboard.core.launcher import (
    Supervisor,
    environ_for_children,
    http_ok,
    python_argv,
    wait_for,
)


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


class Command(BaseCommand):
    help = (
        "Run the whole platform in the foreground: web (ASGI) server, Celery worker and "
        "beat, and simulated vLLM endpoints, on the embedded PostgreSQL and Redis unless "
        "DATABASE_URL / REDIS_URL are set. Migrates, seeds a demo tenant, prints how to "
        "send a message. Ctrl-C stops everything it started; logs go to var/log/."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--simulators",
            type=int,
            default=2,
            help="How many simulated vLLM endpoints to run (0 for none).",
        )
        parser.add_argument(
            "--simulator-port",
            type=int,
            default=8101,
            help="Port of the first simulator; the others follow.",
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            default=8,
            help="Worker threads (inference calls mostly wait on the GPU).",
        )
        parser.add_argument(
            "--demo-callback-url",
            default=DEMO_CALLBACK_URL,
            help="Callback URL given to the demo connector when it is first created "
            "(`dev.py send` listens there to show the reply).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        var = embedded.var_dir()
        # Loading settings started or reused the embedded servers; stop only what this
        # process started, never a server someone else is using.
        owns_pg = "postgres" in embedded.STARTED_HERE
        owns_redis = "redis" in embedded.STARTED_HERE
        self.stdout.write("migrating the database ...")
        call_command("migrate", interactive=False, verbosity=0)
        sim_urls = [
            f"http://127.0.0.1:{options['simulator_port'] + i}"
            for i in range(options["simulators"])
        ]
        demo = demo_seed(endpoint_urls=sim_urls, callback_url=options["demo_callback_url"])

        supervisor = Supervisor(
            env=environ_for_children(
                DATABASE_URL=settings.DATABASE_URL, REDIS_URL=settings.REDIS_URL
            ),
            cwd=embedded.REPO_ROOT,
            log_dir=var / "log",
        )
        previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._start(supervisor, options, sim_urls, var)
            base = f"http://{options['host']}:{options['port']}"
            self._banner(base, demo, var)
            while (dead := supervisor.first_exited()) is None:
                time.sleep(0.5)
            raise CommandError(f"{dead.name} exited unexpectedly:\n{supervisor.tail(dead)}")
        except _Stop:
            self.stdout.write("\nstopping ...")
        finally:
            supervisor.stop_all()
            if owns_pg:
                embedded.stop_postgres(var)
            if owns_redis:
                embedded.stop_redis(var)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stdout.write("stopped.")

    def _start(
        self, supervisor: Supervisor, options: dict[str, Any], sim_urls: list[str], var: Any
    ) -> None:
        for index in range(1, len(sim_urls) + 1):
            port = options["simulator_port"] + index - 1
            supervisor.start(
                f"sim-{index}",
                python_argv(
                    "-m", "inference.simulator", "--port", str(port), "--name", f"sim-{index}"
                ),
            )
        supervisor.start(
            "worker",
            python_argv(
                "-m",
                "celery",
                "-A",
                "switchboard",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                str(options["concurrency"]),
                "--queues",
                "realtime,chat,default",
                "--hostname",
                "worker@%h",
                "--loglevel",
                "INFO",
            ),
        )
        supervisor.start(
            "beat",
            python_argv(
                "-m",
                "celery",
                "-A",
                "switchboard",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(var / "celerybeat-schedule"),
            ),
        )
        supervisor.start(
            "web",
            python_argv(
                "-m",
                "uvicorn",
                "switchboard.asgi:application",
                "--host",
                options["host"],
                "--port",
                str(options["port"]),
                "--no-access-log",
            ),
        )
        if _stream_connectors_exist():
            # Off unless needed: Stream mode holds a WebSocket open to DingTalk per app.
            supervisor.start("dingtalk-stream", python_argv("manage.py", "dingtalk_stream"))
        self.stdout.write("starting simulators, worker, beat and web ...")
        for url in sim_urls:
            wait_for(http_ok(f"{url}/health"), timeout=60, what=url, supervisor=supervisor)
        wait_for(
            http_ok(f"http://{options['host']}:{options['port']}/healthz"),
            timeout=60,
            what="the web server",
            supervisor=supervisor,
        )
        wait_for(
            lambda: bool(celery_app.control.ping(timeout=0.5)),
            timeout=60,
            what="the Celery worker",
            supervisor=supervisor,
        )

    def _banner(self, base: str, demo: Any, var: Any) -> None:
        password = demo.admin_password or "(your existing password)"
        self.stdout.write(self.style.SUCCESS(f"\nSwitchboard is running on {base}/"))
        self.stdout.write(
            f"  console    {base}/console/  user {demo.admin_username}  password {password}"
        )
        self.stdout.write(f"  admin      {base}/admin/  (same user)")
        self.stdout.write(f"  webhook    POST {base}/hooks/webhook/{demo.connector.pk}/")
        self.stdout.write(f"  logs       {var / 'log'}/")
        self.stdout.write("\nIn another terminal, send a signed message and see the reply:")
        self.stdout.write(self.style.SUCCESS('  python3 dev.py send "Hello, who are you?"'))
        self.stdout.write("\nCtrl-C stops everything.")


def _stream_connectors_exist() -> bool:
    from switchboard.bots.models import Connector

    return Connector.objects.filter(
        kind=Connector.Kind.DINGTALK, dingtalk_mode=Connector.DingTalkMode.STREAM, enabled=True
    ).exists()
