"""`pool_endpoint`: how a deployment registers its vLLM servers at every start."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from switchboard.pool.models import InferenceEndpoint

pytestmark = pytest.mark.django_db

MODEL = "Qwen/Qwen-7B-Chat"


def _run(*args: str) -> str:
    out = StringIO()
    call_command("pool_endpoint", *args, stdout=out)
    return out.getvalue()


def test_add_creates_endpoints_and_is_idempotent() -> None:
    specs = ["vllm-1=http://vllm-1.pool.internal:8000/", "vllm-2=http://10.0.0.7:8000"]
    assert "created vllm-1" in _run("add", *specs, "--model", MODEL)
    assert "unchanged vllm-1" in _run("add", *specs, "--model", MODEL)
    rows = {row.name: row for row in InferenceEndpoint.objects.all()}
    assert set(rows) == {"vllm-1", "vllm-2"}
    assert rows["vllm-1"].url == "http://vllm-1.pool.internal:8000"  # no trailing slash
    assert all(row.enabled and row.model == MODEL for row in rows.values())


def test_add_updates_url_and_model_but_keeps_what_the_operator_set() -> None:
    _run("add", "vllm-1=http://vllm-1.pool.internal:8000", "--model", MODEL)
    row = InferenceEndpoint.objects.get(name="vllm-1")
    row.weight, row.max_concurrency, row.enabled, row.draining = 2.0, 8, False, True
    row.save()
    output = _run(
        "add", "vllm-1=http://gpu-9.pool.internal:8000", "--model", "Qwen/Qwen2.5-7B-Instruct"
    )
    assert "updated vllm-1: url, model" in output
    row.refresh_from_db()
    assert row.url == "http://gpu-9.pool.internal:8000"
    assert row.model == "Qwen/Qwen2.5-7B-Instruct"
    assert (row.weight, row.max_concurrency, row.enabled, row.draining) == (2.0, 8, False, True)
    # Given explicitly, the tuning is applied.
    _run(
        "add",
        "vllm-1=http://gpu-9.pool.internal:8000",
        "--model",
        "Qwen/Qwen2.5-7B-Instruct",
        "--max-concurrency",
        "64",
    )
    row.refresh_from_db()
    assert row.max_concurrency == 64


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("vllm-1", "is not NAME=URL"),
        ("=http://a.pool.internal:8000", "is not NAME=URL"),
        # The admin would refuse to save a host without a dot: it could not be edited.
        ("vllm-1=http://vllm-1:8000", "not a URL the admin accepts"),
        ("vllm-1=ftp://a.pool.internal/", "not a URL the admin accepts"),
    ],
)
def test_bad_specs_are_refused(spec: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        _run("add", spec, "--model", MODEL)
    assert not InferenceEndpoint.objects.exists()


def test_a_failure_registers_nothing() -> None:
    _run("add", "taken=http://a.pool.internal:8000", "--model", MODEL)
    with pytest.raises(CommandError, match="Url already exists"):
        _run(
            "add",
            "fresh=http://b.pool.internal:8000",
            "dup=http://a.pool.internal:8000",
            "--model",
            MODEL,
        )
    assert set(InferenceEndpoint.objects.values_list("name", flat=True)) == {"taken"}


def test_list_and_disable() -> None:
    _run("add", "vllm-1=http://vllm-1.pool.internal:8000", "--model", MODEL)
    InferenceEndpoint.objects.filter(name="vllm-1").update(healthy=True)
    assert "vllm-1\thttp://vllm-1.pool.internal:8000\tQwen/Qwen-7B-Chat\tenabled\thealthy" in (
        _run("list")
    )
    assert "disabled vllm-1" in _run("disable", "vllm-1")
    assert not InferenceEndpoint.objects.get(name="vllm-1").enabled
    with pytest.raises(CommandError, match="no endpoint named nope"):
        _run("disable", "nope")
