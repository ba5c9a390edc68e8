from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import models, transaction
from django.db.models.functions import Cast

from switchboard.core import crypto
from switchboard.core.fields import EncryptedTextField, encrypted_fields

STEPS = """\
To rotate the encryption key:
  1. Put the new key first and keep the old one after it, in every process's settings:
       SWITCHBOARD_ENCRYPTION_KEY={new},<old key>
     and restart them all (web, workers, beat, dingtalk-stream): from now on every
     process can read both keys and writes with the new one.
  2. manage.py rotate_encryption_key          re-encrypts every stored secret
  3. manage.py rotate_encryption_key --check  must report nothing left on old keys
  4. Remove the old key from SWITCHBOARD_ENCRYPTION_KEY and restart again.
"""


class Command(BaseCommand):
    help = (
        "Re-encrypt every encrypted column (connector secrets, private keys, alert "
        "secrets) with the first key of SWITCHBOARD_ENCRYPTION_KEY, in one transaction. "
        "Values already under that key are left alone, so running it again changes "
        "nothing. --generate-key prints a new key and the rotation steps."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument(
            "--check",
            action="store_true",
            help="Change nothing; fail if any value is not under the first key (or cannot "
            "be decrypted at all).",
        )
        mode.add_argument(
            "--generate-key",
            action="store_true",
            help="Print a new key and the rotation steps; touches no data.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["generate_key"]:
            self.stdout.write(STEPS.format(new=crypto.generate_key()))
            return
        if not settings.SWITCHBOARD_ENCRYPTION_KEYS:
            raise CommandError("SWITCHBOARD_ENCRYPTION_KEY is empty")
        check = options["check"]
        stale_total = 0
        with transaction.atomic():
            for model, field in encrypted_fields():
                current, stale = self._rotate_field(model, field, check=check)
                stale_total += stale
                label = f"{model._meta.label}.{field.name}"
                verb = "on an old key" if check else "re-encrypted"
                self.stdout.write(f"{label}: {stale} {verb}, {current} already current")
        if check and stale_total:
            raise CommandError(
                f"{stale_total} value(s) still need an old key: run rotate_encryption_key "
                "before removing it"
            )
        if check:
            self.stdout.write("every value is under the first key; old keys can be removed")

    def _rotate_field(
        self, model: type[models.Model], field: EncryptedTextField, *, check: bool
    ) -> tuple[int, int]:
        # The stored ciphertext, read past the field's decryption.
        rows = (
            model._base_manager.exclude(**{f"{field.attname}__isnull": True})
            .annotate(_ciphertext=Cast(field.attname, output_field=models.TextField()))
            .exclude(_ciphertext="")
            .values_list("pk", "_ciphertext")
            .order_by("pk")
        )
        if not check:
            # Held until the transaction ends: a concurrent save of the same row waits
            # rather than being overwritten with the value read here.
            rows = rows.select_for_update(of=("self",))
        current = stale = 0
        for pk, token in rows:
            if crypto.is_current(token):
                current += 1
                continue
            try:
                plaintext = crypto.decrypt(token)
            except ValueError:
                raise CommandError(
                    f"{model._meta.label} {pk}: {field.name} cannot be decrypted with any key "
                    "in SWITCHBOARD_ENCRYPTION_KEY; nothing was changed"
                ) from None
            stale += 1
            if not check:
                # The field encrypts what it is given, with the first key; a queryset
                # update sends no signals and touches no other column.
                model._base_manager.filter(pk=pk).update(**{field.attname: plaintext})
        return current, stale
