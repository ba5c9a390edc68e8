"""docker/Dockerfile read as Docker reads it (instructions per stage), and its build
steps that can run without Docker run here."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.deploy import support

DOCKERFILE = support.DOCKER / "Dockerfile"
DOCKERIGNORE = support.DOCKER / "Dockerfile.dockerignore"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


def _instructions() -> list[tuple[str, str]]:
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in logical]


def _stages() -> tuple[dict[str, str], list[Stage]]:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, rest in _instructions():
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            match = re.fullmatch(r"(\S+) AS (\S+)", rest, flags=re.IGNORECASE)
            assert match, rest
            stages.append(Stage(name=match[2], base=match[1]))
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def _env(stage: Stage) -> dict[str, str]:
    values: dict[str, str] = {}
    for args in stage.all("ENV"):
        for token in shlex.split(args):
            name, _, value = token.partition("=")
            values[name] = value
    return values


def test_two_stages_on_slim_python_311() -> None:
    args, stages = _stages()
    assert [stage.name for stage in stages] == ["builder", "runtime"]
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    assert all(stage.base == "${PYTHON_IMAGE}" for stage in stages)


def test_build_tools_stay_in_the_builder() -> None:
    _, (builder, runtime) = _stages()
    assert any("build-essential" in run for run in builder.all("RUN"))
    for run in runtime.all("RUN"):
        assert "apt-get install" not in run and "pip install" not in run, run
    assert all(copy.startswith("--from=builder ") for copy in runtime.all("COPY"))


def test_runtime_runs_as_a_numeric_non_root_user() -> None:
    _, stages = _stages()
    user = stages[-1].all("USER")[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0
    assert gid.isdigit() and int(gid) != 0


def test_entrypoint_and_default_role() -> None:
    _, stages = _stages()
    runtime = stages[-1]
    assert shlex.split(runtime.all("ENTRYPOINT")[-1].strip("[]").replace(",", " ")) == [
        "python",
        f"{support.IMAGE_APP_DIR}/docker/entrypoint.py",
    ]
    assert runtime.all("CMD")[-1] == '["web"]'
    assert runtime.all("WORKDIR")[-1] == support.IMAGE_APP_DIR


def test_runtime_copies_what_exists_and_serves_collected_static_files() -> None:
    _, (builder, runtime) = _stages()
    assert "COPY" in dict(builder.instructions)
    built = {"/src/staticfiles", "/opt/venv"}  # made in the builder
    for copy in runtime.all("COPY"):
        *sources, _target = copy.split()[1:]
        for source in sources:
            if source in built:
                continue
            assert source.startswith("/src/")
            assert (support.REPO_ROOT / source.removeprefix("/src/")).exists(), source
    env = _env(runtime)
    assert env["STATIC_ROOT"] == f"{support.IMAGE_APP_DIR}/staticfiles"
    assert env["WHITENOISE_USE_FINDERS"] == "false"
    assert env["PYTHONPATH"].split(":")[:2] == [
        f"{support.IMAGE_APP_DIR}/platform",
        support.IMAGE_APP_DIR,
    ]
    assert any("/src/staticfiles /app/staticfiles" in copy for copy in runtime.all("COPY"))


def test_front_end_assets_are_fetched_and_checked_in_the_build() -> None:
    _, (builder, _) = _stages()
    runs = " ".join(builder.all("RUN"))
    assert "dev.ensure_assets()" in runs
    # A vendor folder from a checkout never reaches the image unchecked.
    ignored = DOCKERIGNORE.read_text().splitlines()
    assert "platform/switchboard/console/static/console/vendor" in ignored
    for private in (".venv", "var", "docker/.env"):
        assert private in ignored


def test_the_builds_collectstatic_step_runs_outside_docker(tmp_path: Path) -> None:
    """The builder's collectstatic RUN, with its own environment, into a temporary folder."""
    _, (builder, _) = _stages()
    (run,) = [run for run in builder.all("RUN") if "collectstatic" in run]
    first_command = run.split("&&")[0]
    tokens = shlex.split(first_command)
    env = dict(os.environ)
    for key in [k for k in env if k.startswith(("SWITCHBOARD_", "DJANGO_"))]:
        del env[key]
    while "=" in tokens[0]:
        name, _, value = tokens.pop(0).partition("=")
        env[name] = value
    assert tokens[:2] == ["python", "docker/entrypoint.py"]
    env["STATIC_ROOT"] = str(tmp_path / "static")
    env["SWITCHBOARD_VAR_DIR"] = str(tmp_path / "var")
    result = subprocess.run(
        [sys.executable, *tokens[1:]],
        cwd=support.REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for name in ("htmx.min.js", "chart.umd.js"):
        assert (tmp_path / "static" / "console" / "vendor" / name).stat().st_size > 0
    assert (tmp_path / "static" / "admin").is_dir()


@pytest.mark.parametrize("role", ["web", "worker", "beat", "migrate", "dingtalk-stream"])
def test_default_and_documented_roles_print_a_command(role: str) -> None:
    argv = support.entrypoint_print([role], {})
    assert Path(argv[0]).is_file()
