"""Console end users: the paginated, searchable list and the MAU history chart."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

URL = "/console/users/"


def _end_user(tenant: Any, external_id: str, **fields: Any) -> Any:
    from switchboard.conversations.models import EndUser

    fields.setdefault("channel", "webhook")
    return EndUser.objects.create(tenant=tenant, external_id=external_id, **fields)


def _chart(page: str) -> dict[str, Any]:
    match = re.search(r'<canvas id="mau-chart" data-chart="([^"]*)"', page)
    assert match, "no MAU chart"
    return json.loads(html.unescape(match.group(1)))


def _add_months(month: date, months: int) -> date:
    index = month.year * 12 + month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def test_the_list_renders_for_every_role(
    viewer_of: Callable[[Any], Client],
    admin_of: Callable[[Any], Client],
    operator_client: Client,
    tenant: Any,
) -> None:
    _end_user(tenant, "ding-001", display_name="Li Lei", channel="dingtalk")
    for client in (viewer_of(tenant), admin_of(tenant), operator_client):
        response = client.get(URL)
        assert response.status_code == 200
        page = response.content.decode()
        assert "ding-001" in page and "Li Lei" in page and "DingTalk" in page
        assert "console/charts.js" in page


def test_another_tenants_end_users_never_show(
    viewer_of: Callable[[Any], Client], tenant: Any, other_tenant: Any
) -> None:
    _end_user(tenant, "acme-user")
    _end_user(other_tenant, "globex-user", display_name="Globex Person")
    client = viewer_of(tenant)
    page = client.get(URL).content.decode()
    assert "acme-user" in page
    assert "globex-user" not in page and "Globex Person" not in page
    # Searching for it does not find it either.
    found = client.get(URL, {"q": "globex"}).content.decode()
    assert "globex-user" not in found
    assert "No end users match this search." in found


def test_an_operator_sees_every_tenant_with_its_name(
    operator_client: Client, tenant: Any, other_tenant: Any
) -> None:
    _end_user(tenant, "acme-user")
    _end_user(other_tenant, "globex-user")
    page = operator_client.get(URL).content.decode()
    assert "acme-user" in page and "globex-user" in page
    assert "Acme" in page and "Globex" in page
    # Looking into one tenant narrows the list to it.
    operator_client.post("/console/tenant/", {"tenant": str(tenant.pk)})
    page = operator_client.get(URL).content.decode()
    assert "acme-user" in page and "globex-user" not in page


def test_search_finds_by_external_id_and_by_display_name(
    viewer_of: Callable[[Any], Client], tenant: Any
) -> None:
    _end_user(tenant, "ding-7731", display_name="Han Meimei")
    _end_user(tenant, "genie-0042", display_name="Zhang San", channel="aligenie")
    client = viewer_of(tenant)

    page = client.get(URL, {"q": "7731"}).content.decode()
    assert "ding-7731" in page and "genie-0042" not in page
    assert "1 end user" in page

    page = client.get(URL, {"q": "zhang"}).content.decode()
    assert "genie-0042" in page and "ding-7731" not in page

    page = client.get(URL, {"channel": "aligenie"}).content.decode()
    assert "genie-0042" in page and "ding-7731" not in page


def test_live_search_returns_only_the_results(
    viewer_of: Callable[[Any], Client], tenant: Any
) -> None:
    _end_user(tenant, "ding-7731")
    _end_user(tenant, "ding-9999")
    response = viewer_of(tenant).get(URL, {"q": "7731"}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    fragment = response.content.decode()
    assert "<html" not in fragment and "mau-chart" not in fragment
    assert "ding-7731" in fragment and "ding-9999" not in fragment


def test_the_list_is_paginated_by_50_newest_first(
    viewer_of: Callable[[Any], Client], tenant: Any
) -> None:
    from switchboard.conversations.models import EndUser

    start = datetime(2024, 5, 1, tzinfo=UTC)
    for i in range(51):
        user = _end_user(tenant, f"user-{i:03d}")
        EndUser.objects.filter(pk=user.pk).update(last_seen_at=start + timedelta(minutes=i))
    client = viewer_of(tenant)

    first = client.get(URL).content.decode()
    assert first.count("<code>user-") == 50
    assert "user-050" in first and "user-000" not in first
    assert "Page 1 of 2" in first
    assert "51 end users" in first

    second = client.get(URL, {"page": 2}).content.decode()
    assert second.count("<code>user-") == 1
    assert "user-000" in second
    # A page number past the end, or not a number, lands on a real page.
    assert client.get(URL, {"page": 99}).status_code == 200
    assert client.get(URL, {"page": "x"}).status_code == 200


def test_pagination_links_keep_the_search(viewer_of: Callable[[Any], Client], tenant: Any) -> None:
    for i in range(55):
        _end_user(tenant, f"shop-{i:03d}")
    page = viewer_of(tenant).get(URL, {"q": "shop"}).content.decode()
    assert 'href="?q=shop&amp;page=2"' in page


def test_the_mau_chart_has_twelve_months_against_the_licence_limit(
    viewer_of: Callable[[Any], Client], tenant: Any, other_tenant: Any, settings: Any
) -> None:
    from switchboard.licensing.services import limits_cache_clear
    from switchboard.metering.models import MauCounter
    from switchboard.metering.selectors import month_start

    settings.SWITCHBOARD_FREE_TIER = {**settings.SWITCHBOARD_FREE_TIER, "mau_limit": 100}
    limits_cache_clear()
    this_month = month_start()
    MauCounter.objects.create(tenant=tenant, month=this_month, active=85)
    MauCounter.objects.create(tenant=tenant, month=_add_months(this_month, -2), active=40)
    MauCounter.objects.create(tenant=tenant, month=_add_months(this_month, -12), active=999)
    MauCounter.objects.create(tenant=other_tenant, month=this_month, active=7)

    page = viewer_of(tenant).get(URL).content.decode()
    limits_cache_clear()
    chart = _chart(page)
    labels = chart["data"]["labels"]
    assert len(labels) == 12
    assert labels[-1] == f"{this_month:%Y-%m}"
    assert labels[0] == f"{_add_months(this_month, -11):%Y-%m}"
    active, limit = chart["data"]["datasets"]
    assert active["data"] == [0] * 9 + [40, 0, 85]
    assert limit["label"] == "Licence limit"
    assert limit["data"] == [100] * 12
    assert 'class="bar warn"' in page
    assert "of 100 licensed (85 %)" in page


def test_an_operator_sees_the_installations_mau_without_a_limit_line(
    operator_client: Client, tenant: Any, other_tenant: Any
) -> None:
    from switchboard.metering.models import MauCounter
    from switchboard.metering.selectors import month_start

    MauCounter.objects.create(tenant=tenant, month=month_start(), active=30)
    MauCounter.objects.create(tenant=other_tenant, month=month_start(), active=12)
    chart = _chart(operator_client.get(URL).content.decode())
    assert len(chart["data"]["datasets"]) == 1
    assert chart["data"]["datasets"][0]["data"][-1] == 42


def test_odd_search_input_finds_nothing_rather_than_failing(
    viewer_of: Callable[[Any], Client], tenant: Any
) -> None:
    _end_user(tenant, "ding-1")
    client = viewer_of(tenant)
    for params in ({"q": "\x00"}, {"q": "%_\\'"}, {"channel": "\x00x"}, {"q": "x" * 5000}):
        assert client.get(URL, params).status_code == 200
    assert "ding-1" in client.get(URL, {"q": "\x00ding"}).content.decode()


def test_the_list_renders_in_chinese(viewer_of: Callable[[Any], Client], tenant: Any) -> None:
    _end_user(tenant, "ding-1")
    client = viewer_of(tenant)
    client.post("/console/language/", {"language": "zh-hans", "next": URL})
    response = client.get(URL)
    assert response.status_code == 200
    assert response["Content-Language"] == "zh-hans"
