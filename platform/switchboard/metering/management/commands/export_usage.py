from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from switchboard.metering.export import usage_csv_rows, write_csv
from switchboard.metering.management.commands._options import day, midnight_utc, tenant_by_slug


class Command(BaseCommand):
    help = (
        "Export a tenant's usage as CSV (UTF-8, RFC 4180). --period hour or day: one row "
        "per bucket and bot from the rollups (bucket start in UTC, requests, ok, failed, "
        "prompt and completion tokens, mean time to first token and latency in ms); these "
        "trail the ledger by about a minute. --period records: one row per inference call "
        "from the ledger itself. The range is [--from, --to): --from 2026-11-01 --to "
        "2026-12-01 is November, UTC."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, metavar="SLUG", help="The tenant's slug.")
        parser.add_argument(
            "--period",
            choices=["hour", "day", "records"],
            default="day",
            help="Rows per hour, per day (default), or one per ledger record.",
        )
        parser.add_argument(
            "--from",
            dest="start",
            type=day,
            required=True,
            metavar="YYYY-MM-DD",
            help="First day, included (UTC).",
        )
        parser.add_argument(
            "--to",
            dest="end",
            type=day,
            required=True,
            metavar="YYYY-MM-DD",
            help="Day after the last one, excluded (UTC).",
        )
        parser.add_argument(
            "--out", metavar="FILE", help="Write to FILE instead of standard output."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["end"] <= options["start"]:
            raise CommandError("--to must be after --from (it is excluded)")
        tenant = tenant_by_slug(options["tenant"])
        rows = usage_csv_rows(
            tenant,
            period=options["period"],
            start=midnight_utc(options["start"]),
            end=midnight_utc(options["end"]),
        )
        if options["out"]:
            with Path(options["out"]).open("w", newline="", encoding="utf-8") as out:
                count = write_csv(rows, out)
            # stderr, so a summary never mixes into CSV piped from stdout elsewhere.
            self.stderr.write(f"Wrote {count} rows to {options['out']}.")
        else:
            # csv writes each row, terminator included, in one call, so the wrapper adds
            # no newline of its own.
            write_csv(rows, self.stdout)
