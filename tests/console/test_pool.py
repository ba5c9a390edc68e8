"""Console GPU pool page (operators): figures per endpoint, live table, drain/enable/add,
health check now, all audited."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

pytestmark = pytest.mark.django_db

POOL = "/console/pool/"
TABLE = "/console/pool/table/"


@pytest.fixture
def gpu() -> Any:
    from switchboard.pool.models import InferenceEndpoint

    return InferenceEndpoint.objects.create(
        name="gpu-a",
        url="http://gpu-a.internal:8000",
        weight=2.0,
        max_concurrency=48,
        healthy=True,
        running=7.0,
        waiting=3.0,
        kv_cache_usage=0.42,
        prefix_cache_hit_rate=0.655,
        checked_at=timezone.now(),
    )


@pytest.fixture
def operator(make_console_user: Callable[..., Any]) -> tuple[Any, Client]:
    """The operator user and a client signed in as them (the audit log names the user)."""
    user = make_console_user("operator")
    client = Client(REMOTE_ADDR="10.20.30.40")
    client.force_login(user)
    return user, client


def _row(html: str, name: str) -> str:
    match = re.search(rf'<tr data-endpoint="{re.escape(name)}">(.*?)</tr>', html, re.S)
    assert match, f"no row for {name}"
    return match.group(1)


def _usage(tenant: Any, endpoint: str, *, minutes_ago: float, tokens: int, outcome: str) -> None:
    from switchboard.metering.models import UsageRecord

    UsageRecord.objects.create(
        tenant=tenant,
        endpoint=endpoint,
        completion_tokens=tokens,
        outcome=outcome,
        created_at=timezone.now() - timedelta(minutes=minutes_ago),
    )


def test_operator_sees_each_endpoints_health_load_and_throughput(
    operator_client: Client, gpu: Any, tenant: Any
) -> None:
    # Served in the last 5 minutes: 2 (600 tokens); in the hour: 3. Busy calls and
    # calls older than an hour are not throughput.
    _usage(tenant, "gpu-a", minutes_ago=1, tokens=200, outcome="ok")
    _usage(tenant, "gpu-a", minutes_ago=2, tokens=400, outcome="partial")
    _usage(tenant, "gpu-a", minutes_ago=30, tokens=999, outcome="ok")
    _usage(tenant, "gpu-a", minutes_ago=1, tokens=0, outcome="busy")
    _usage(tenant, "gpu-a", minutes_ago=90, tokens=999, outcome="ok")

    page = operator_client.get(POOL)

    assert page.status_code == 200
    html = page.content.decode()
    row = _row(html, "gpu-a")
    cells = [re.sub(r"<[^>]+>|\s+", " ", c).strip() for c in re.findall(r"<td.*?</td>", row, re.S)]
    assert "http://gpu-a.internal:8000" in cells[0] and "Qwen/Qwen-7B-Chat" in cells[0]
    assert "healthy" in cells[1]
    assert cells[2:4] == ["7", "3"]  # running, waiting
    assert "42%" in cells[4] and 'style="width: 42%"' in row  # the KV-cache bar
    assert cells[5] == "66%"  # prefix-cache hit rate
    assert cells[6:9] == ["2", "3", "2.0"]  # served 5 min, 60 min, tokens/s (600 / 300 s)
    assert cells[9:11] == ["2", "48"]  # weight, max concurrency
    # The table refreshes itself through htmx every 5 seconds.
    assert f'hx-get="{TABLE}"' in html and 'hx-trigger="every 5s"' in html


def test_kv_cache_bar_turns_red_when_nearly_full(operator_client: Client, gpu: Any) -> None:
    gpu.kv_cache_usage = 0.95
    gpu.save()
    row = _row(operator_client.get(TABLE).content.decode(), "gpu-a")
    assert 'class="bar bad"' in row and "95%" in row


def test_the_fragment_is_the_table_only(operator_client: Client, gpu: Any) -> None:
    fragment = operator_client.get(TABLE)
    assert fragment.status_code == 200
    html = fragment.content.decode().strip()
    assert html.startswith("<table") and html.endswith("</table>")
    assert "<html" not in html and "sidebar" not in html
    assert "gpu-a" in html


@pytest.mark.parametrize("path", [POOL, TABLE])
def test_tenant_users_get_404_on_the_pool(
    admin_of: Callable[[Any], Client],
    viewer_of: Callable[[Any], Client],
    tenant: Any,
    gpu: Any,
    path: str,
) -> None:
    assert admin_of(tenant).get(path).status_code == 404
    assert viewer_of(tenant).get(path).status_code == 404


def test_tenant_admin_cannot_drain_an_endpoint(
    admin_of: Callable[[Any], Client], tenant: Any, gpu: Any
) -> None:
    response = admin_of(tenant).post(f"{POOL}{gpu.pk}/drain/")
    assert response.status_code == 404
    gpu.refresh_from_db()
    assert gpu.draining is False


def test_drain_and_undrain_change_the_row_and_are_audited(
    operator: tuple[Any, Client], gpu: Any
) -> None:
    from auditlog.models import LogEntry

    user, client = operator
    response = client.post(f"{POOL}{gpu.pk}/drain/", follow=True)

    assert response.status_code == 200
    assert "gpu-a is draining" in response.content.decode()
    gpu.refresh_from_db()
    assert gpu.draining is True
    # The health figures written by the checker are left as they were.
    assert gpu.running == 7.0 and gpu.kv_cache_usage == 0.42
    row = _row(client.get(TABLE).content.decode(), "gpu-a")
    assert "draining" in row and "Undrain" in row

    entry = LogEntry.objects.get_for_object(gpu).filter(action=LogEntry.Action.UPDATE).first()
    assert entry is not None
    assert entry.actor == user and entry.remote_addr == "10.20.30.40"
    assert entry.changes_dict == {"draining": ["False", "True"]}

    client.post(f"{POOL}{gpu.pk}/undrain/")
    gpu.refresh_from_db()
    assert gpu.draining is False
    assert LogEntry.objects.get_for_object(gpu).filter(action=LogEntry.Action.UPDATE).count() == 2


def test_disable_and_enable_change_the_row_and_are_audited(
    operator: tuple[Any, Client], gpu: Any
) -> None:
    from auditlog.models import LogEntry

    user, client = operator
    client.post(f"{POOL}{gpu.pk}/disable/")
    gpu.refresh_from_db()
    assert gpu.enabled is False
    row = _row(client.get(TABLE).content.decode(), "gpu-a")
    assert "disabled" in row and ">Enable<" in row

    client.post(f"{POOL}{gpu.pk}/enable/")
    gpu.refresh_from_db()
    assert gpu.enabled is True
    changes = [
        (e.changes_dict, e.actor, e.remote_addr)
        for e in LogEntry.objects.get_for_object(gpu).order_by("timestamp", "pk")
        if e.action == LogEntry.Action.UPDATE
    ]
    assert changes == [
        ({"enabled": ["True", "False"]}, user, "10.20.30.40"),
        ({"enabled": ["False", "True"]}, user, "10.20.30.40"),
    ]


def test_actions_need_post_and_a_known_action(operator_client: Client, gpu: Any) -> None:
    assert operator_client.get(f"{POOL}{gpu.pk}/drain/").status_code == 405
    assert operator_client.post(f"{POOL}{gpu.pk}/explode/").status_code == 404
    assert operator_client.post(f"{POOL}999999/drain/").status_code == 404


def test_operator_adds_an_endpoint(operator: tuple[Any, Client]) -> None:
    from auditlog.models import LogEntry

    from switchboard.pool.models import InferenceEndpoint

    user, client = operator
    response = client.post(
        f"{POOL}add/",
        {
            "name": "gpu-b",
            "url": "http://gpu-b.internal:8000/",
            "model": "Qwen/Qwen-7B-Chat",
            "weight": "1.5",
            "max_concurrency": "16",
        },
    )

    assert response.status_code == 302
    added = InferenceEndpoint.objects.get(name="gpu-b")
    assert added.url == "http://gpu-b.internal:8000"  # no trailing slash
    assert (added.weight, added.max_concurrency, added.enabled) == (1.5, 16, True)
    entry = LogEntry.objects.get_for_object(added).get()
    assert entry.action == LogEntry.Action.CREATE and entry.actor == user


def test_an_invalid_endpoint_is_refused_with_the_reason(operator_client: Client, gpu: Any) -> None:
    from switchboard.pool.models import InferenceEndpoint

    response = operator_client.post(
        f"{POOL}add/",
        {"name": "gpu-a", "url": "not a url", "model": "m", "weight": "0", "max_concurrency": "0"},
    )

    assert response.status_code == 200
    html = response.content.decode()
    assert "was not added" in html
    assert "already exists" in html  # the name
    assert "Enter a valid URL" in html
    assert InferenceEndpoint.objects.count() == 1


def test_check_health_now_probes_and_records_each_enabled_endpoint(
    operator_client: Client,
) -> None:
    from switchboard.pool.models import InferenceEndpoint

    # Nothing listens on the discard port: the probe fails at once.
    down = InferenceEndpoint.objects.create(name="gpu-down", url="http://127.0.0.1:9")

    response = operator_client.post(f"{POOL}check/", follow=True)

    assert response.status_code == 200
    assert "Unhealthy: gpu-down" in response.content.decode()
    down.refresh_from_db()
    assert down.healthy is False and down.checked_at is not None and down.last_error


def test_tenant_admin_cannot_add_endpoints_or_check_health(
    admin_of: Callable[[Any], Client], tenant: Any
) -> None:
    from switchboard.pool.models import InferenceEndpoint

    client = admin_of(tenant)
    assert client.post(f"{POOL}check/").status_code == 404
    data = {"name": "x", "url": "http://x:8000", "model": "m", "weight": 1, "max_concurrency": 1}
    assert client.post(f"{POOL}add/", data).status_code == 404
    assert not InferenceEndpoint.objects.exists()
