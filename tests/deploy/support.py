"""Reading docker/compose.yaml the way Compose does: YAML (anchors and merge keys), then
`${...}` interpolation from an environment, then per-service helpers."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER = REPO_ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
ENTRYPOINT = DOCKER / "entrypoint.py"
VLLM_NODE = DOCKER / "vllm-node.sh"
# Where the image puts the repository (Dockerfile: WORKDIR /app).
IMAGE_APP_DIR = "/app"

# Values for the secrets compose requires; .env.example leaves them empty on purpose.
TEST_SECRETS = {
    "POSTGRES_PASSWORD": "pw0123456789",
    "SECRET_KEY": "test-secret-key",
    "SWITCHBOARD_ENCRYPTION_KEY": "dGVzdC1rZXktdGVzdC1rZXktdGVzdC1rZXktdGVzdDA=",
}

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>[^}]*))?\})"
)


class InterpolationError(ValueError):
    pass


def compose_schema() -> dict[str, Any]:
    """The Compose Specification's JSON schema, as the check-jsonschema package ships it."""
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(vendored.read_text())


def load_raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"{path.name}: {line!r} is not NAME=value"
        values[name.strip()] = value.strip()
    return values


def interpolate_text(text: str, env: dict[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg") or ""
        value = env.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if value is not None else arg
        if op in (":?", "?"):
            if value is None or (op == ":?" and not value):
                raise InterpolationError(f"{name}: {arg}")
            return value
        if op == ":+":
            return arg if value else ""
        if op == "+":
            return arg if value is not None else ""
        return value or ""

    return _VARIABLE.sub(substitute, text)


def interpolate(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate_text(node, env)
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    return node


def example_env(**overrides: str) -> dict[str, str]:
    """docker/.env.example as an operator fills it in: the secrets set, the rest as shipped."""
    env = read_env_file(ENV_EXAMPLE)
    env.update(TEST_SECRETS)
    env.update(overrides)
    return env


def load(env: dict[str, str] | None = None) -> dict[str, Any]:
    return interpolate(load_raw(), example_env() if env is None else env)


def referenced_variables() -> set[str]:
    return {m.group("name") for m in _VARIABLE.finditer(COMPOSE_FILE.read_text()) if m["name"]}


def service_environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {key: "" if value is None else str(value) for key, value in environment.items()}


def platform_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services that run the platform image (built from docker/Dockerfile)."""
    return {
        name: service
        for name, service in compose["services"].items()
        if (service.get("build") or {}).get("dockerfile") == "docker/Dockerfile"
    }


def entrypoint_print(command: list[str], env: dict[str, str]) -> list[str]:
    """The command line docker/entrypoint.py would run for `command`, run outside Docker."""
    full_env = {**os.environ, **env}
    result = subprocess.run(
        [sys.executable, str(ENTRYPOINT), "--print", *command],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"entrypoint --print {command}: {result.stderr}"
    return shlex.split(result.stdout)


def vllm_node_print(env: dict[str, str], *args: str) -> list[str]:
    result = subprocess.run(
        ["sh", str(VLLM_NODE), "--print", *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, f"vllm-node.sh --print: {result.stderr}"
    return shlex.split(result.stdout)


def host_path(service: dict[str, Any], container_path: str) -> Path:
    """The file on this machine that a bind mount of `service` shows at `container_path`."""
    for volume in service.get("volumes", []):
        source, _, rest = volume.partition(":")
        target = rest.split(":", 1)[0]
        if not source.startswith("."):
            continue  # a named volume
        if container_path == target or container_path.startswith(target + "/"):
            return (DOCKER / source / container_path[len(target) :].lstrip("/")).resolve()
    raise AssertionError(f"{container_path} is not inside a bind mount of the service")
