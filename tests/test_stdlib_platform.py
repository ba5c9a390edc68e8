"""platform/ holds our Django code but must never shadow the standard library module."""

from __future__ import annotations

import subprocess
import sys

from tests.support.processes import REPO_ROOT


def test_stdlib_platform_works_inside_the_test_process_with_django_set_up():
    import platform

    from django.conf import settings

    assert settings.configured
    assert platform.system() == "Linux"
    assert "site-packages" not in platform.__file__ and str(REPO_ROOT) not in platform.__file__


def test_stdlib_platform_works_in_a_process_that_sets_up_django():
    code = (
        "import django, platform, switchboard; django.setup(); "
        "import uuid; uuid.uuid4(); "
        "print(platform.system(), platform.__file__, switchboard.__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    system, path, name = out.stdout.split()
    assert system == "Linux"
    assert not path.startswith(str(REPO_ROOT / "platform"))
    assert name == "switchboard"


def test_manage_py_runs_with_the_stdlib_platform():
    out = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "import platform, switchboard.settings as s; print(platform.system(), s.__name__)",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.split()[-2:] == ["Linux", "switchboard.settings"]


def test_every_module_has_one_import_name():
    import switchboard.settings

    assert switchboard.settings.__file__.startswith(str(REPO_ROOT / "platform" / "switchboard"))
    assert not (REPO_ROOT / "platform" / "__init__.py").exists()
    assert "platform.switchboard" not in sys.modules
