from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from connectors.dingtalk_stream import StreamSupervisor
from switchboard.hooks.stream import on_stream_message, stream_connectors


class Command(BaseCommand):
    help = (
        "Run DingTalk Stream-mode clients (the official dingtalk-stream SDK) for every "
        "enabled Stream-mode DingTalk connector. Connectors are re-read every "
        "SWITCHBOARD_DINGTALK_STREAM_REFRESH_S seconds, so enabling, disabling or "
        "rotating credentials takes effect without a restart. Each message is stored "
        "before it is acknowledged. Stops cleanly on SIGINT/SIGTERM."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--refresh",
            type=float,
            default=None,
            help="Seconds between re-reading the connectors "
            "(default: SWITCHBOARD_DINGTALK_STREAM_REFRESH_S).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        stop = threading.Event()

        def request_stop(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        supervisor = StreamSupervisor(
            on_stream_message, api_base=settings.SWITCHBOARD_DINGTALK_API_BASE
        )
        refresh = options["refresh"] or settings.SWITCHBOARD_DINGTALK_STREAM_REFRESH_S
        self.stdout.write(
            f"dingtalk_stream: watching Stream-mode connectors every {refresh:g}s "
            f"(gateway {settings.SWITCHBOARD_DINGTALK_API_BASE})"
        )
        supervisor.run(stream_connectors, stop=stop, poll_interval_s=refresh)
        self.stdout.write("dingtalk_stream: stopped")
