from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from switchboard.metering.admission import mau_rebuild, model_mau_rebuild
from switchboard.metering.selectors import month_start

from ._options import day, tenant_by_slug


class Command(BaseCommand):
    help = (
        "Recompute a month's MAU counters from the per-user MAU rows (the source of truth), "
        "for one tenant or for all; for all, each served model's installation-wide MAU "
        "too. Admission writes a tenant's counter with its rows in one transaction, and "
        "a model's just after, so this is needed after a crash between the two or after "
        "manual changes to the database."
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
        if tenant is None:
            models = model_mau_rebuild(month=month)
            self.stdout.write(f"rebuilt {models} model MAU counter(s) for {month:%Y-%m}")
