"""Create, list and revoke a tenant's API keys from the command line."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from switchboard.apikeys.models import ApiKey, Scope
from switchboard.apikeys.services import api_key_create, api_key_revoke
from switchboard.tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Manage a tenant's API keys. `create` prints the key once (only its hash is "
        "kept); `list` shows prefixes, scopes and state; `revoke PREFIX` stops a key."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Make a key and print it once.")
        create.add_argument("--tenant", required=True, help="The tenant's slug.")
        create.add_argument("--name", required=True, help="What uses the key.")
        create.add_argument(
            "--scopes",
            default="read",
            help=f"Comma-separated, from: {', '.join(s.value for s in Scope)} (default: read).",
        )
        create.add_argument(
            "--expires", help="A day (YYYY-MM-DD, UTC) from which the key no longer works."
        )
        listing = sub.add_parser("list", help="The tenant's keys.")
        listing.add_argument("--tenant", required=True, help="The tenant's slug.")
        revoke = sub.add_parser("revoke", help="Revoke a key by its prefix.")
        revoke.add_argument("prefix", help="The part after `sb_` shown by `list`.")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "revoke":
            key = ApiKey.objects.filter(prefix=options["prefix"]).first()
            if key is None:
                raise CommandError(f"no API key has the prefix {options['prefix']!r}")
            api_key_revoke(key=key)
            self.stdout.write(f"revoked {key.name} (sb_{key.prefix}_…)")
            return
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"no tenant has the slug {options['tenant']!r}")
        if action == "list":
            for key in ApiKey.objects.for_tenant(tenant).order_by("-created_at"):
                state = "revoked" if key.revoked_at else "expired" if key.expired else "active"
                self.stdout.write(
                    f"sb_{key.prefix}_…  {state:8} {','.join(key.scopes):16} {key.name}"
                )
            return
        expires = None
        if options["expires"]:
            try:
                day = datetime.strptime(options["expires"], "%Y-%m-%d").date()
            except ValueError:
                raise CommandError("--expires takes a day, e.g. 2027-01-31") from None
            expires = datetime.combine(day, time.min, tzinfo=UTC)
        scopes = [s.strip() for s in options["scopes"].split(",") if s.strip()]
        try:
            _, plaintext = api_key_create(
                tenant=tenant, name=options["name"], scopes=scopes, expires_at=expires
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(plaintext)
