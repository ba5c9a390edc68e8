from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from switchboard.licensing.documents import generate_private_key_pem, key_id, public_key_b64


class Command(BaseCommand):
    help = (
        "Create a licence signing key (Ed25519). The private key goes to --out, readable "
        "by its owner only; keep it on the issuing machine and back it up, since licences "
        "cannot be issued without it. The command prints the public key: installations "
        "that should accept licences signed with this key list it in "
        "SWITCHBOARD_LICENCE_PUBLIC_KEYS (comma-separated, so an old and a new key can be "
        "trusted side by side while rotating)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--out",
            metavar="PATH",
            required=True,
            help="Where to write the private key (PEM). An existing file is never overwritten.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["out"])
        pem = generate_private_key_pem()
        # O_EXCL: refuse to overwrite, even a file that appeared a moment ago; 0o600 from
        # the first byte, so the key is never readable by others.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise CommandError(
                f"{path} already exists; not overwriting a signing key (choose another --out)"
            ) from None
        except OSError as exc:
            raise CommandError(f"cannot create {path}: {exc.strerror}") from None
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        # The umask may have narrowed the mode further; never wider than 0o600.
        os.chmod(path, 0o600)
        public = public_key_b64(pem)
        self.stdout.write(f"Private key written to {path} (mode 600).")
        self.stdout.write(f"Public key: {public}")
        self.stdout.write(f"Key id: {key_id(public)}")
        self.stdout.write("Set this on every installation that should accept its licences:")
        self.stdout.write(f"SWITCHBOARD_LICENCE_PUBLIC_KEYS={public}")
