#!/usr/bin/env python3
"""Switchboard's developer entry point. Needs only Python 3.11+.

    python3 dev.py up        run the platform on its embedded default (Ctrl-C stops it)
    python3 dev.py test      run the test suite
    python3 dev.py send TEXT send a signed message to the demo bot and print the reply
    python3 dev.py manage …  any Django management command
    python3 dev.py embedded status|stop
                             the embedded PostgreSQL and Redis under var/
    python3 dev.py lint      ruff

The first run creates .venv/ and installs the project into it; later runs reuse it and
reinstall only when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".switchboard-installed"


def _requirements_digest() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def ensure_venv() -> None:
    if STAMP.exists() and STAMP.read_text() == _requirements_digest() and PYTHON.exists():
        return
    if not PYTHON.exists():
        print("dev.py: creating .venv/ ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("dev.py: installing Switchboard and its dependencies into .venv/ ...", flush=True)
    pip = [str(PYTHON), "-m", "pip", "--disable-pip-version-check", "-q"]
    log = VENV / "install.log"
    with open(log, "w") as out:
        for step in (["install", "--upgrade", "pip"], ["install", "-e", f"{ROOT}[dev]"]):
            if subprocess.run([*pip, *step], stdout=out, stderr=subprocess.STDOUT).returncode:
                tail = log.read_text().splitlines()[-30:]
                detail = "\n".join(tail)
                sys.exit(f"dev.py: installation failed:\n{detail}\n(full log: {log})")
    STAMP.write_text(_requirements_digest())


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 (dev.py may be run by an older python3)
        print("Switchboard needs Python 3.11 or newer.", file=sys.stderr)
        return 2
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    commands = {
        "up": ["manage.py", "up", *rest],
        "send": ["manage.py", "demo_send", *rest],
        "manage": ["manage.py", *rest],
        "embedded": ["-m", "switchboard.embedded", *rest],
        "test": ["-m", "pytest", *rest],
        "lint": ["-m", "ruff", "check", *(rest or ["."])],
    }
    if command not in commands:
        print(f"dev.py: unknown command {command!r}\n{__doc__}", file=sys.stderr)
        return 2
    ensure_venv()
    os.chdir(ROOT)
    if command == "test":
        # On the embedded default, keep the tests' queues apart from a running platform's.
        os.environ.setdefault("SWITCHBOARD_EMBEDDED_REDIS_DB", "1")
    args = [str(PYTHON), *commands[command]]
    os.execv(args[0], args)  # noqa: S606 (no shell: arguments pass through untouched)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
