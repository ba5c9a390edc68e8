from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from switchboard.metering.management.commands._options import day, midnight_utc, tenant_by_slug
from switchboard.metering.rollups import rollups_rebuild


class Command(BaseCommand):
    help = (
        "Recompute the hourly and daily usage rollups from the usage ledger, for whole "
        "UTC days. The rollups of the chosen days (one tenant's, or every tenant's) are "
        "deleted and summed again from the ledger rows the rollup cursor has reached; "
        "newer rows are left to the beat task, which carries them within a minute. Use it "
        "after restoring a backup, or when rollups and ledger disagree. Without --from and "
        "--to every day is rebuilt. Updates of the rollups wait while it runs."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", metavar="SLUG", help="Only this tenant (default: all).")
        parser.add_argument(
            "--from",
            dest="start",
            type=day,
            metavar="YYYY-MM-DD",
            help="First day to rebuild, included (default: the first day in the ledger).",
        )
        parser.add_argument(
            "--to",
            dest="end",
            type=day,
            metavar="YYYY-MM-DD",
            help="Day after the last one to rebuild, excluded: --from 2026-11-01 --to "
            "2026-12-01 rebuilds November (default: up to the newest ledger row).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        start, end = options["start"], options["end"]
        if start is not None and end is not None and end <= start:
            raise CommandError("--to must be after --from (it is excluded)")
        tenant = tenant_by_slug(options["tenant"]) if options["tenant"] else None
        counted = rollups_rebuild(
            tenant_id=tenant.pk if tenant else None,
            start=midnight_utc(start) if start else None,
            end=midnight_utc(end) if end else None,
        )
        who = f"tenant {tenant.slug}" if tenant else "all tenants"
        span = f"{start or 'the beginning'} to {end or 'now'}"
        self.stdout.write(f"Rebuilt the rollups of {who}, {span}, from {counted} ledger rows.")
