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

import base64
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import urllib.request
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


# The console's browser libraries, installed from the npm registry at setup (never loaded
# from a CDN at run time) and checked against the registry's published integrity hash.
NPM_REGISTRY = os.environ.get("SWITCHBOARD_NPM_REGISTRY", "https://registry.npmjs.org")
VENDOR = ROOT / "platform" / "switchboard" / "console" / "static" / "console" / "vendor"
ASSETS = [
    # (package, version, sha512 integrity, file in the package, installed as)
    (
        "htmx.org",
        "2.0.4",
        "HLxMCdfXDOJirs3vBZl/ZLoY+c7PfM4Ahr2Ad4YXh6d22T5ltbTXFFkpx9Tgb2vvmWFMbIc3LqN2ToNkZJvyYQ==",
        "package/dist/htmx.min.js",
        "htmx.min.js",
    ),
    (
        "chart.js",
        "4.4.7",
        "pwkcKfdzTMAU/+jNosKhNL2bHtJc/sSmYgVbuGTEDhzkrhmyihmP7vUc/5ZK9WopidMDHNe3Wm7jOd/WhuHWuw==",
        "package/dist/chart.umd.js",
        "chart.umd.js",
    ),
]


def ensure_assets() -> None:
    for package, version, integrity, member, name in ASSETS:
        target = VENDOR / name
        if target.exists():
            continue
        url = f"{NPM_REGISTRY}/{package}/-/{package}-{version}.tgz"
        print(f"dev.py: fetching {package} {version} from the npm registry ...", flush=True)
        try:
            with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (https)
                data = response.read()
        except OSError as exc:
            print(
                f"dev.py: could not fetch {url} ({exc}); the console works without "
                f"{name}, minus its interactivity or charts",
                file=sys.stderr,
            )
            continue
        digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
        if digest != integrity:
            sys.exit(f"dev.py: {url} does not match its published sha512 integrity; refusing it")
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            source = archive.extractfile(member)
            if source is None:
                sys.exit(f"dev.py: {member} missing from {url}")
            VENDOR.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read())


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
    ensure_assets()
    os.chdir(ROOT)
    if command == "test":
        # On the embedded default, keep the tests' queues apart from a running platform's.
        os.environ.setdefault("SWITCHBOARD_EMBEDDED_REDIS_DB", "1")
    args = [str(PYTHON), *commands[command]]
    os.execv(args[0], args)  # noqa: S606 (no shell: arguments pass through untouched)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
