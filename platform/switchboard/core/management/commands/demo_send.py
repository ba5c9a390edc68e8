from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.core.management.base import BaseCommand, CommandError, CommandParser
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from connectors.webhook import sign_headers
from switchboard.core.demo import demo_connector


def _receiver(secret: str, inbox: queue.Queue[dict[str, Any]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                event = Webhook(secret).verify(body, dict(self.headers.items()))
            except WebhookVerificationError as exc:
                self.send_response(401)
                self.end_headers()
                inbox.put({"error": f"callback signature rejected: {exc}"})
                return
            self.send_response(204)
            self.end_headers()
            inbox.put(event)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class Command(BaseCommand):
    help = (
        "Send one signed message to the demo webhook connector and print the bot's reply, "
        "received on the connector's callback URL (a receiver this command runs)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("text", nargs="?", default="Hello! What can you do?")
        parser.add_argument(
            "--base-url",
            default="http://127.0.0.1:8000",
            help="Where the platform's web server listens.",
        )
        parser.add_argument("--user", default="demo-user", help="End-user id to send as.")
        parser.add_argument(
            "--timeout", type=float, default=60.0, help="Seconds to wait for the reply."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        connector = demo_connector()
        if connector is None:
            raise CommandError("no demo connector: start the platform with `python3 dev.py up`")
        callback = urlsplit(connector.callback_url)
        inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        try:
            server = ThreadingHTTPServer(
                (callback.hostname or "127.0.0.1", callback.port or 80),
                _receiver(connector.secret, inbox),
            )
        except OSError as exc:
            raise CommandError(f"cannot listen on {connector.callback_url}: {exc}") from exc
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            self._send(connector, options, inbox)
        finally:
            server.shutdown()

    def _send(self, connector: Any, options: dict[str, Any], inbox: queue.Queue[Any]) -> None:
        message_id = f"demo-{uuid.uuid4().hex[:12]}"
        body = json.dumps(
            {"message_id": message_id, "user_id": options["user"], "text": options["text"]},
            ensure_ascii=False,
        )
        url = f"{options['base_url'].rstrip('/')}/hooks/webhook/{connector.pk}/"
        headers = sign_headers(secret=connector.secret, event_id=f"msg_{message_id}", body=body)
        headers["content-type"] = "application/json"
        self.stdout.write(f"> {options['text']}")
        started = time.monotonic()
        try:
            response = httpx.post(url, content=body.encode(), headers=headers, timeout=10)
        except httpx.HTTPError as exc:
            raise CommandError(
                f"cannot reach {url}: {exc} (is `python3 dev.py up` running?)"
            ) from exc
        if response.status_code != 202:
            raise CommandError(f"webhook answered {response.status_code}: {response.text}")
        try:
            event = inbox.get(timeout=options["timeout"])
        except queue.Empty:
            raise CommandError(f"no reply within {options['timeout']:.0f}s") from None
        if "error" in event:
            raise CommandError(event["error"])
        data = event["data"]
        usage, timings = data["usage"], data["timings"]
        self.stdout.write(f"< {data['text']}")
        self.stdout.write(
            f"  tokens {usage['prompt_tokens']} in / {usage['completion_tokens']} out, "
            f"first token {timings['ttft_ms']:.0f} ms, inference {timings['latency_ms']:.0f} ms, "
            f"round trip {1000 * (time.monotonic() - started):.0f} ms"
        )
