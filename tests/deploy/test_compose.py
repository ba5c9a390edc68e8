"""docker/compose.yaml without a Docker engine: the Compose Specification's schema, then
what each service would run, checked against this checkout."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest

from tests.deploy import support

GPU_SERVICES = ("vllm-1", "vllm-2")
SIM_SERVICES = ("sim-1", "sim-2")
ONE_SHOT = ("migrate", "register-pool")
LONG_RUNNING_PLATFORM = (
    "web",
    "worker-realtime",
    "worker-chat",
    "worker-default",
    "beat",
    "dingtalk-stream",
)


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return support.compose_schema()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return support.load()


# --- the specification ------------------------------------------------------------------


def test_the_schema_is_the_compose_specification(schema: dict[str, Any]) -> None:
    assert schema["title"] == "Compose Specification"
    assert "services" in schema["properties"]


def test_compose_file_is_valid_against_the_compose_specification(
    schema: dict[str, Any],
) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    # As written (variables unexpanded) and as Compose sees it after interpolation.
    for document in (support.load_raw(), support.load()):
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
        assert errors == []


def test_the_schema_check_is_not_vacuous(schema: dict[str, Any], compose: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    broken = copy.deepcopy(compose)
    broken["services"]["web"]["restart_policy"] = "always"  # not a Compose key
    broken["services"]["web"]["healthcheck"]["test"] = {"cmd": "curl"}  # string or list
    paths = {tuple(e.absolute_path) for e in validator.iter_errors(broken)}
    assert ("services", "web") in paths
    assert ("services", "web", "healthcheck", "test") in paths


def test_every_variable_is_documented_in_env_example() -> None:
    text = support.ENV_EXAMPLE.read_text()
    documented = set(support.read_env_file(support.ENV_EXAMPLE))
    # A variable may be documented commented out (its default applies).
    documented |= {
        line.lstrip("#").split("=", 1)[0].strip()
        for line in text.splitlines()
        if line.startswith("#") and "=" in line and line.lstrip("#")[:1].isupper()
    }
    assert support.referenced_variables() - documented == set()


def test_required_secrets_stop_compose_when_missing() -> None:
    for secret in support.TEST_SECRETS:
        env = support.example_env()
        env[secret] = ""
        with pytest.raises(support.InterpolationError, match=secret):
            support.load(env)


# --- the platform services --------------------------------------------------------------


def _resolves(argv: list[str]) -> None:
    """The program exists here and what it is asked to load can be loaded."""
    from django.core.management import get_commands

    program = Path(argv[0])
    assert program.is_file(), argv
    if argv[1:2] == ["-m"]:
        module = argv[2]
        assert importlib.util.find_spec(module) is not None, argv
        if module == "celery":
            app = argv[argv.index("-A") + 1]
            assert importlib.util.find_spec(app) is not None, argv
        if module == "uvicorn":
            target = next(arg for arg in argv[3:] if ":" in arg and not arg.startswith("-"))
            assert importlib.util.find_spec(target.split(":")[0]) is not None, argv
    else:
        script = Path(argv[1])
        assert script == support.REPO_ROOT / "manage.py", argv
        assert argv[2] in get_commands(), f"no management command {argv[2]!r}"


def test_every_platform_service_command_resolves(compose: dict[str, Any]) -> None:
    services = support.platform_services(compose)
    assert set(services) == {*ONE_SHOT, *LONG_RUNNING_PLATFORM, *SIM_SERVICES}
    for service in services.values():
        argv = support.entrypoint_print(service["command"], support.service_environment(service))
        _resolves(argv)


def test_each_queue_has_its_own_thread_pool_worker(compose: dict[str, Any]) -> None:
    seen: dict[str, str] = {}
    for name in ("worker-realtime", "worker-chat", "worker-default"):
        service = compose["services"][name]
        argv = support.entrypoint_print(service["command"], support.service_environment(service))
        assert argv[argv.index("--pool") + 1] == "threads"
        queues = argv[argv.index("--queues") + 1]
        assert "," not in queues
        seen[queues] = name
    assert set(seen) == {"realtime", "chat", "default"}


def test_web_serves_the_asgi_application(compose: dict[str, Any]) -> None:
    service = compose["services"]["web"]
    argv = support.entrypoint_print(service["command"], support.service_environment(service))
    assert argv[1:4] == ["-m", "uvicorn", "switchboard.asgi:application"]
    assert argv[argv.index("--port") + 1] == "8000"
    assert any(port.endswith(":8000") for port in service["ports"])


def test_one_shot_jobs_do_not_restart_and_servers_do(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ONE_SHOT:
        assert services[name]["restart"] == "no"
    for name in (
        *LONG_RUNNING_PLATFORM,
        *GPU_SERVICES,
        *SIM_SERVICES,
        "postgres",
        "redis",
    ):
        assert services[name]["restart"] == "unless-stopped", name


def test_platform_waits_for_its_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in LONG_RUNNING_PLATFORM:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    register = services["register-pool"]["depends_on"]
    assert register["migrate"]["condition"] == "service_completed_successfully"


def test_health_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    web = services["web"]["healthcheck"]["test"]
    assert web[:2] == ["CMD", "python"]
    assert web[2:] == [
        f"{support.IMAGE_APP_DIR}/docker/entrypoint.py",
        "healthcheck",
        "web",
    ]
    for name in ("worker-realtime", "worker-chat", "worker-default"):
        test = services[name]["healthcheck"]["test"]
        queue = name.removeprefix("worker-")
        assert test[3:] == ["healthcheck", "worker", queue]
    for name in (*GPU_SERVICES, *SIM_SERVICES):
        assert "http://127.0.0.1:8000/health'" in " ".join(services[name]["healthcheck"]["test"])
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    assert "ping" in services["redis"]["healthcheck"]["test"]


def test_platform_runs_read_only_as_the_image_user(compose: dict[str, Any]) -> None:
    for name, service in support.platform_services(compose).items():
        assert service["read_only"] is True, name
        assert "user" not in service, f"{name} must keep the image's non-root user"


def test_required_settings_reach_every_platform_process(
    compose: dict[str, Any],
) -> None:
    for name in (*ONE_SHOT, *LONG_RUNNING_PLATFORM):
        env = support.service_environment(compose["services"][name])
        for setting in (
            "DATABASE_URL",
            "REDIS_URL",
            "SECRET_KEY",
            "SWITCHBOARD_ENCRYPTION_KEY",
        ):
            assert env.get(setting), f"{name} lacks {setting}"
        assert urlsplit(env["DATABASE_URL"]).hostname == "postgres"
        assert urlsplit(env["REDIS_URL"]).hostname == "redis"


# --- the GPU pool -----------------------------------------------------------------------


def _vllm_command(compose: dict[str, Any], name: str) -> tuple[list[str], dict[str, Any]]:
    """What the vLLM container runs: its entrypoint script, run here with --print and the
    service's environment, its container paths mapped to the files they mount."""
    service = compose["services"][name]
    shell, script = service["entrypoint"]
    assert shell == "/bin/sh"
    assert support.host_path(service, script) == support.VLLM_NODE.resolve()
    env = support.service_environment(service)
    for key in ("CHAT_TEMPLATE", "GENERATION_CONFIG"):
        if env.get(key):
            env[key] = str(support.host_path(service, env[key]))
    return support.vllm_node_print(env), service


@pytest.mark.parametrize("name", GPU_SERVICES)
def test_vllm_serves_qwen_with_what_it_needs(compose: dict[str, Any], name: str) -> None:
    argv, service = _vllm_command(compose, name)
    assert argv[:3] == ["vllm", "serve", "Qwen/Qwen-7B-Chat"]
    assert "--trust-remote-code" in argv
    template = Path(argv[argv.index("--chat-template") + 1])
    assert template == (support.DOCKER / "vllm" / "qwen-chatml.jinja").resolve()
    generation = Path(argv[argv.index("--generation-config") + 1])
    eos = json.loads((generation / "generation_config.json").read_text())["eos_token_id"]
    assert set(eos) == {151643, 151645}  # <|endoftext|>, <|im_end|>
    assert argv[argv.index("--port") + 1] == "8000"
    assert service["profiles"] == ["gpu"]


def test_each_vllm_server_gets_its_own_gpu(compose: dict[str, Any]) -> None:
    gpus = []
    for name in GPU_SERVICES:
        (device,) = compose["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia"
        assert device["capabilities"] == ["gpu"]
        assert len(device["device_ids"]) == 1
        gpus.append(device["device_ids"][0])
    assert len(set(gpus)) == len(gpus)


def test_model_cache_is_a_named_volume(compose: dict[str, Any]) -> None:
    for name in GPU_SERVICES:
        volumes = compose["services"][name]["volumes"]
        assert "hf-cache:/root/.cache/huggingface" in volumes
    assert "hf-cache" in compose["volumes"]


def test_the_model_is_one_variable() -> None:
    """MODEL changes what every vLLM server serves, what the simulators answer to, and
    what the platform registers its endpoints for; nothing else names the model."""
    text = support.COMPOSE_FILE.read_text()
    assert text.count("Qwen/Qwen-7B-Chat") == text.count("${MODEL:-Qwen/Qwen-7B-Chat}")
    model = "Qwen/Qwen2.5-7B-Instruct"
    compose = support.load(support.example_env(MODEL=model, CHAT_TEMPLATE="", GENERATION_CONFIG=""))
    for name in GPU_SERVICES:
        argv, _ = _vllm_command(compose, name)
        assert argv[:3] == ["vllm", "serve", model]
        # The model's own template and stop tokens, when asked for.
        assert "--chat-template" not in argv and "--generation-config" not in argv
    for name in (*SIM_SERVICES, "register-pool"):
        service = compose["services"][name]
        argv = support.entrypoint_print(service["command"], support.service_environment(service))
        assert argv[argv.index("--model") + 1] == model
    web_env = support.service_environment(compose["services"]["web"])
    assert web_env["MODEL"] == model


# --- the simulator profile ---------------------------------------------------------------


def _aliases(service: dict[str, Any]) -> set[str]:
    return set(service["networks"]["default"]["aliases"])


def test_sim_profile_stands_in_for_every_gpu_server(compose: dict[str, Any]) -> None:
    services = compose["services"]
    gpu = set().union(*(_aliases(services[name]) for name in GPU_SERVICES))
    sim = set().union(*(_aliases(services[name]) for name in SIM_SERVICES))
    assert gpu == sim
    for name in SIM_SERVICES:
        assert services[name]["profiles"] == ["sim"]
        argv = support.entrypoint_print(
            services[name]["command"], support.service_environment(services[name])
        )
        assert argv[1:3] == ["-m", "inference.simulator"]
        assert argv[argv.index("--port") + 1] == "8000"
    # Nothing that runs in both profiles depends on a profile's service.
    profiled = {name for name, s in services.items() if s.get("profiles")}
    for name, service in services.items():
        if not service.get("profiles"):
            assert not set(service.get("depends_on") or {}) & profiled, name


def test_registered_endpoints_are_the_pool_servers(compose: dict[str, Any]) -> None:
    from switchboard.pool.management.commands.pool_endpoint import _parse_spec

    services = compose["services"]
    env = support.service_environment(services["register-pool"])
    specs = [_parse_spec(item) for item in env["SWITCHBOARD_POOL_ENDPOINTS"].split(",")]
    hosts = {urlsplit(url).hostname for _, url in specs}
    assert hosts == set().union(*(_aliases(services[name]) for name in GPU_SERVICES))
    assert {urlsplit(url).port for _, url in specs} == {8000}
