from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from switchboard.core.demo import DEMO_CALLBACK_URL, demo_seed


class Command(BaseCommand):
    help = (
        "Create the demo tenant, bot, webhook connector, inference endpoints and an admin "
        "user if they are missing. Safe to run repeatedly."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--endpoint",
            action="append",
            default=[],
            metavar="URL",
            help="vLLM (or simulator) base URL to register; repeat for several.",
        )
        parser.add_argument(
            "--callback-url",
            default=DEMO_CALLBACK_URL,
            help="Where the demo connector POSTs replies.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        demo = demo_seed(endpoint_urls=options["endpoint"], callback_url=options["callback_url"])
        self.stdout.write(f"tenant     {demo.tenant.name} ({demo.tenant.slug})")
        self.stdout.write(f"bot        {demo.bot.name}")
        self.stdout.write(f"connector  {demo.connector.pk}  -> {demo.connector.callback_url}")
        if demo.admin_password:
            self.stdout.write(f"admin      {demo.admin_username} / {demo.admin_password}")
