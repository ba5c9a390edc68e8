from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from switchboard.metering.admission import mau_rebuild
from switchboard.metering.selectors import month_start

from ._options import day, tenant_by_slug


class Command(BaseCommand):
    help = (
        "Recompute a month's MAU counters from the per-user MAU rows (the source of truth), "
        "for one tenant or all. Counters and rows are written in one transaction by "
        "admission, so this is only needed after manual changes to the database."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--month",
            type=day,
            default=None,
            help="any date in the month, YYYY-MM-DD (UTC); default: the current month",
        )
        parser.add_argument("--tenant", default=None, help="tenant slug; default: every tenant")

    def handle(self, *args: Any, **options: Any) -> None:
        month = month_start(options["month"])
        tenant = tenant_by_slug(options["tenant"]) if options["tenant"] else None
        rows = mau_rebuild(tenant_id=tenant.pk if tenant else None, month=month)
        self.stdout.write(f"rebuilt {rows} MAU counter(s) for {month:%Y-%m}")
