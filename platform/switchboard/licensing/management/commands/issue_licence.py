from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from switchboard.licensing.documents import CONNECTOR_KINDS, LicenceTerms, sign_licence


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is negative")
    return number


def _when(value: str) -> datetime:
    """An ISO date (midnight UTC) or date and time (UTC unless it names an offset)."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(
            f"{value!r} is not an ISO-8601 date (2026-01-31) or date and time "
            "(2026-01-31T12:00:00Z)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


class Command(BaseCommand):
    help = (
        "Issue a signed licence for one tenant and write the licence document (a small "
        "JSON text) to --out or standard output. The operator then imports it with "
        "`import_licence` or in the admin (Licences → Import licence). This needs only "
        "the signing key, not the tenant's database, so it can run on a separate, "
        "offline issuing machine. A limit left out means no limit. Example: "
        "manage.py issue_licence --key signing.pem --tenant acme --mau-limit 5000 "
        "--connector-kinds webhook,dingtalk --valid-days 365 --out acme.licence"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--key",
            required=True,
            metavar="PATH",
            help="The private signing key made by `licence_keygen`.",
        )
        parser.add_argument(
            "--tenant",
            required=True,
            metavar="SLUG",
            help="The tenant's slug, exactly as on the installation.",
        )
        limits = parser.add_argument_group("limits (left out: no limit)")
        limits.add_argument(
            "--mau-limit",
            type=_count,
            metavar="N",
            help="Monthly active users: distinct end users active in a calendar month (UTC).",
        )
        limits.add_argument(
            "--monthly-tokens",
            type=_count,
            metavar="N",
            help="Tokens (prompt + completion) per calendar month (UTC).",
        )
        limits.add_argument(
            "--tenant-per-minute",
            type=_count,
            metavar="N",
            help="Inbound messages per minute for the whole tenant.",
        )
        limits.add_argument(
            "--user-per-minute",
            type=_count,
            metavar="N",
            help="Inbound messages per minute per end user.",
        )
        limits.add_argument(
            "--connector-kinds",
            metavar="KINDS",
            help="Comma-separated connector kinds the tenant may create, from: "
            f"{', '.join(sorted(CONNECTOR_KINDS))}. Left out: all kinds.",
        )
        limits.add_argument(
            "--max-bots", type=_count, metavar="N", help="How many bots the tenant may have."
        )
        limits.add_argument(
            "--enforcement",
            choices=["hard", "soft"],
            default="hard",
            help="Beyond the MAU limit: hard refuses new end users (existing ones keep "
            "service); soft serves everyone and records the overage. Default: hard.",
        )
        validity = parser.add_argument_group("validity (UTC unless an offset is given)")
        validity.add_argument(
            "--valid-from",
            metavar="WHEN",
            help="ISO date or date and time it starts (default: now). A date means midnight UTC.",
        )
        until = validity.add_mutually_exclusive_group(required=True)
        until.add_argument(
            "--valid-days", type=_count, metavar="N", help="Valid for N days from --valid-from."
        )
        until.add_argument(
            "--valid-until",
            metavar="WHEN",
            help="ISO date or date and time it ends (exclusive). A date means midnight UTC "
            "at the start of that day.",
        )
        parser.add_argument(
            "--out",
            metavar="FILE",
            default="-",
            help="Write the document to this file (default: standard output). An existing "
            "file is never overwritten.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            private_pem = Path(options["key"]).read_bytes()
        except OSError as exc:
            raise CommandError(
                f"cannot read the signing key {options['key']}: {exc.strerror}"
            ) from None
        now = datetime.now(tz=UTC)
        valid_from = _when(options["valid_from"]) if options["valid_from"] else now
        if options["valid_days"] is not None:
            valid_until = valid_from + timedelta(days=options["valid_days"])
        else:
            valid_until = _when(options["valid_until"])
        kinds = tuple(
            kind.strip() for kind in (options["connector_kinds"] or "").split(",") if kind.strip()
        )
        try:
            terms = LicenceTerms(
                licence_id=uuid.uuid4(),
                tenant=options["tenant"],
                issued_at=now,
                valid_from=valid_from,
                valid_until=valid_until,
                mau_limit=options["mau_limit"],
                monthly_tokens=options["monthly_tokens"],
                tenant_messages_per_minute=options["tenant_per_minute"],
                user_messages_per_minute=options["user_per_minute"],
                connector_kinds=kinds,
                max_bots=options["max_bots"],
                enforcement=options["enforcement"],
            )
            document = sign_licence(terms, private_pem)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if options["out"] == "-":
            self.stdout.write(document, ending="")
            return
        path = Path(options["out"])
        try:
            with path.open("x", encoding="ascii") as out:
                out.write(document)
        except FileExistsError:
            raise CommandError(f"{path} already exists; not overwriting it") from None
        except OSError as exc:
            raise CommandError(f"cannot write {path}: {exc.strerror}") from None
        # Operator feedback goes to stderr, so stdout stays clean when piped.
        self.stderr.write(
            f"Licence {terms.licence_id} for {terms.tenant}, valid "
            f"{terms.valid_from:%Y-%m-%d %H:%M:%S} to {terms.valid_until:%Y-%m-%d %H:%M:%S} UTC, "
            f"written to {path}"
        )
