from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from switchboard.licensing.documents import LicenceError
from switchboard.licensing.services import licence_current, licence_import


def _limit(value: int | None) -> str:
    return "no limit" if value is None else f"{value:,}"


class Command(BaseCommand):
    help = (
        "Import a signed licence document (from `issue_licence`) into this installation's "
        "licence ledger. The signature is checked against SWITCHBOARD_LICENCE_PUBLIC_KEYS, "
        "the tenant must exist, an expired or already imported licence is refused, and a "
        "refused licence changes nothing. A licence that starts in the future is accepted "
        "and comes into force by itself. Among a tenant's licences in force, the most "
        "recently issued one applies."
    )
    # Tests pass their own standard input, as Django's createsuperuser allows.
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="The licence document; - reads standard input.")
        parser.add_argument(
            "--by",
            metavar="NAME",
            default="",
            help="Who imports it, recorded in the ledger (default: empty).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        source = options["file"]
        if source == "-":
            text = (options.get("stdin") or sys.stdin).read()
        else:
            try:
                text = Path(source).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandError(f"cannot read {source}: {exc}") from None
        try:
            licence = licence_import(text=text, imported_by=options["by"])
        except LicenceError as exc:
            raise CommandError(f"licence refused: {exc}") from None
        starts_later = licence.valid_from > timezone.now()
        kinds = ", ".join(licence.connector_kinds) or "all"
        lines = [
            f"Imported licence {licence.licence_id} for tenant {licence.tenant.slug} "
            f"({licence.tenant.name}).",
            f"  valid:            {licence.valid_from:%Y-%m-%d %H:%M:%S} to "
            f"{licence.valid_until:%Y-%m-%d %H:%M:%S} UTC"
            + (" (not in force yet)" if starts_later else ""),
            f"  monthly users:    {_limit(licence.mau_limit)} ({licence.enforcement})",
            f"  monthly tokens:   {_limit(licence.monthly_tokens)}",
            f"  messages/minute:  {_limit(licence.tenant_messages_per_minute)} per tenant, "
            f"{_limit(licence.user_messages_per_minute)} per user",
            f"  connector kinds:  {kinds}",
            f"  bots:             {_limit(licence.max_bots)}",
        ]
        current = licence_current(licence.tenant)
        if not starts_later and current is not None and current.pk != licence.pk:
            # Newest issued wins: importing an older document does not replace a newer one.
            lines.append(
                f"Note: licence {current.licence_id}, issued later, stays in force until "
                f"{current.valid_until:%Y-%m-%d %H:%M:%S} UTC."
            )
        self.stdout.write("\n".join(lines))
