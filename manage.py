#!/usr/bin/env python3
"""Django's command-line utility for Switchboard."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    # platform/ is a source root (like src/), never a package: see pyproject.toml.
    source_root = str(Path(__file__).resolve().parent / "platform")
    if source_root not in sys.path:
        sys.path.insert(0, source_root)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "switchboard.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
