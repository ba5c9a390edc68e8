from __future__ import annotations

import getpass
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from switchboard.console.models import Membership, Role
from switchboard.tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Create a console user, or change an existing user's role. Operators see every "
        "tenant; tenant admins and viewers see only theirs. Example: manage.py "
        "console_user alice --role admin --tenant acme"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", choices=[r.value for r in Role], required=True)
        parser.add_argument("--tenant", help="tenant slug (required unless --role operator)")
        parser.add_argument(
            "--password",
            help="the password (default: asked for; prefer that, a password here lands in "
            "your shell history)",
        )
        parser.add_argument("--language", choices=["en", "zh-hans"], default="en")

    def handle(self, *args: Any, **options: Any) -> None:
        role = options["role"]
        tenant = None
        if role != Role.OPERATOR:
            if not options["tenant"]:
                raise CommandError("--tenant is required for tenant admins and viewers")
            tenant = Tenant.objects.filter(slug=options["tenant"]).first()
            if tenant is None:
                raise CommandError(f"no tenant with slug {options['tenant']!r}")
        elif options["tenant"]:
            raise CommandError("operators belong to no tenant: leave --tenant out")
        users = get_user_model()
        with transaction.atomic():
            user = users.objects.filter(username=options["username"]).first()
            if user is None:
                password = options["password"] or getpass.getpass("Password: ")
                if not password:
                    raise CommandError("a new user needs a password")
                user = users.objects.create_user(username=options["username"], password=password)
                verb = "created"
            else:
                if options["password"]:
                    user.set_password(options["password"])
                    user.save(update_fields=["password"])
                verb = "updated"
            Membership.objects.update_or_create(
                user=user,
                defaults={"tenant": tenant, "role": role, "language": options["language"]},
            )
        where = f" of {tenant.slug}" if tenant else ""
        self.stdout.write(f"{verb} {user.username}: {role}{where}")
