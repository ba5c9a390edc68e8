"""Console overview: usage over a date range, MAU against the licence, TTFT percentiles,
busiest bots, recent errors, open alerts; installation totals for operators."""

from __future__ import annotations

import html
import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

pytestmark = pytest.mark.django_db

URL = "/console/"


def _today() -> date:
    return timezone.now().astimezone(UTC).date()


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _card(page: str, name: str) -> str:
    """The text of a card's big value, whitespace collapsed."""
    match = re.search(rf'id="card-{name}">.*?<div class="value">(.*?)</div>', page, flags=re.DOTALL)
    assert match, f"no card {name!r}"
    return " ".join(html.unescape(match.group(1)).split())


def _section(page: str, section_id: str) -> str:
    """A panel's markup, up to where the next panel (or the page) begins."""
    start = page.find(f'id="{section_id}"')
    assert start >= 0, f"no section {section_id!r}"
    end = page.find('class="panel"', start)
    return page[start : end if end >= 0 else len(page)]


def _chart(page: str, canvas_id: str) -> dict[str, Any]:
    match = re.search(rf'<canvas id="{canvas_id}" data-chart="([^"]*)"', page)
    assert match, f"no chart {canvas_id!r}"
    return json.loads(html.unescape(match.group(1)))


def _rollup(tenant: Any, bot: Any, day: date, **figures: Any) -> Any:
    from switchboard.metering.models import UsageRollup

    return UsageRollup.objects.create(
        period="day", bucket=_midnight(day), tenant=tenant, bot=bot, **figures
    )


@pytest.fixture
def rival(other_tenant: Any) -> Any:
    """A bot and connector of the other tenant."""
    from switchboard.bots.services import bot_create, connector_create_webhook

    bot = bot_create(tenant=other_tenant, name="Rival bot", system_prompt="x")
    return connector_create_webhook(bot=bot, name="Rival hook")


@pytest.fixture
def make_message() -> Callable[..., Any]:
    from switchboard.conversations.models import Conversation, EndUser, Message

    def make(connector: Any, *, direction: str = "in", **fields: Any) -> Any:
        end_user, _ = EndUser.objects.get_or_create(
            tenant_id=connector.tenant_id, channel="webhook", external_id="someone"
        )
        conversation, _ = Conversation.objects.get_or_create(
            tenant_id=connector.tenant_id,
            connector=connector,
            external_key="user:someone",
            defaults={"bot": connector.bot, "end_user": end_user},
        )
        created_at = fields.pop("created_at", None)
        fields.setdefault("status", "replied" if direction == "in" else "delivered")
        message = Message.objects.create(
            tenant_id=connector.tenant_id,
            conversation=conversation,
            connector=connector,
            direction=direction,
            text="hello",
            provider_message_id=uuid.uuid4().hex if direction == "in" else "",
            **fields,
        )
        if created_at is not None:
            Message.objects.filter(pk=message.pk).update(created_at=created_at)
        return message

    return make


# --- who sees it ------------------------------------------------------------------------


def test_the_overview_renders_for_every_role(
    viewer_of: Callable[[Any], Client],
    admin_of: Callable[[Any], Client],
    operator_client: Client,
    tenant: Any,
) -> None:
    for client in (viewer_of(tenant), admin_of(tenant), operator_client):
        response = client.get(URL)
        assert response.status_code == 200
        assert 'id="card-messages"' in response.content.decode()
    # An operator looking into one tenant sees that tenant's page.
    operator_client.post("/console/tenant/", {"tenant": str(tenant.pk)})
    page = operator_client.get(URL).content.decode()
    assert 'id="busiest-bots"' in page
    assert 'id="model-mau"' not in page


def test_pages_with_charts_load_chart_js_from_static_files(
    viewer_of: Callable[[Any], Client], tenant: Any
) -> None:
    page = viewer_of(tenant).get(URL).content.decode()
    assert "console/vendor/chart.umd.js" in page
    assert "console/charts.js" in page
    assert "cdn" not in page.lower()


# --- usage figures ----------------------------------------------------------------------


def test_usage_from_the_ledger_shows_after_the_rollups_carry_it(
    viewer_of: Callable[[Any], Client], tenant: Any, bot: Any
) -> None:
    from switchboard.metering.models import UsageRecord
    from switchboard.metering.rollups import rollups_update

    at = timezone.now() - timedelta(hours=1)
    for outcome, prompt, completion in (("ok", 100, 20), ("ok", 50, 30), ("error", 7, 0)):
        UsageRecord.objects.create(
            tenant=tenant,
            bot=bot,
            outcome=outcome,
            prompt_tokens=prompt,
            completion_tokens=completion,
            ttft_ms=100.0,
            created_at=at,
        )
    client = viewer_of(tenant)
    # Not yet rolled up: the page shows nothing rather than guessing.
    assert _card(client.get(URL).content.decode(), "messages") == "0"

    assert rollups_update(now=timezone.now() + timedelta(minutes=5)) == 3
    page = client.get(URL).content.decode()
    assert _card(page, "messages") == "3"
    assert _card(page, "tokens") == "207"
    assert "2 answered · 1 failed" in page
    assert "157 prompt · 50 completion" in page
    busiest = _section(page, "busiest-bots")
    assert "Helper" in busiest


def test_the_range_picks_which_days_count(
    viewer_of: Callable[[Any], Client], tenant: Any, bot: Any
) -> None:
    _rollup(tenant, bot, date(2024, 3, 1), requests=4, ok=4, prompt_tokens=40)
    _rollup(tenant, bot, date(2024, 3, 5), requests=6, ok=5, failed=1, prompt_tokens=60)
    _rollup(tenant, bot, date(2024, 3, 9), requests=100, ok=100)
    client = viewer_of(tenant)

    page = client.get(URL, {"from": "2024-03-01", "to": "2024-03-05"}).content.decode()
    assert _card(page, "messages") == "10"
    assert _card(page, "tokens") == "100"
    # The default range (the last 14 days) has none of it.
    assert _card(client.get(URL).content.decode(), "messages") == "0"


def test_the_chart_carries_one_point_per_day_zeros_included(
    viewer_of: Callable[[Any], Client], tenant: Any, bot: Any
) -> None:
    _rollup(tenant, bot, date(2024, 3, 2), requests=3, prompt_tokens=10, completion_tokens=5)
    _rollup(tenant, None, date(2024, 3, 2), requests=2, prompt_tokens=1)
    _rollup(tenant, bot, date(2024, 3, 4), requests=7, completion_tokens=70)

    page = viewer_of(tenant).get(URL, {"from": "2024-03-01", "to": "2024-03-04"}).content.decode()
    chart = _chart(page, "usage-chart")
    assert chart["data"]["labels"] == ["2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04"]
    messages, tokens = chart["data"]["datasets"]
    assert messages["label"] == "Messages"
    assert messages["data"] == [0, 5, 0, 7]
    assert tokens["label"] == "Tokens"
    assert tokens["data"] == [0, 16, 0, 70]


def test_the_default_chart_covers_the_last_14_days(
    viewer_of: Callable[[Any], Client], tenant: Any, bot: Any
) -> None:
    _rollup(tenant, bot, _today(), requests=9)
    chart = _chart(viewer_of(tenant).get(URL).content.decode(), "usage-chart")
    labels = chart["data"]["labels"]
    assert len(labels) == 14
    assert labels[-1] == _today().isoformat()
    assert chart["data"]["datasets"][0]["data"][-1] == 9


# --- date range validation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "2024-13-40", "to": "2024-03-01"}, "Enter a valid date"),
        ({"from": "yesterday"}, "Enter a valid date"),
        ({"from": "2024-03-05", "to": "2024-03-01"}, "must not be after the end date"),
        ({"from": "2020-01-01", "to": "2024-01-01"}, "at most 366 days"),
        ({"from": "9999-12-30", "to": "9999-12-31"}, "too far in the future"),
        ({"from": "0001-01-01", "to": "0001-01-02"}, "before 2000-01-01 are not supported"),
        ({"from": "2024-03-01\x00"}, "Enter a valid date"),
    ],
)
def test_a_bad_range_gets_a_clear_message_not_an_error_page(
    viewer_of: Callable[[Any], Client], tenant: Any, params: dict[str, str], message: str
) -> None:
    response = viewer_of(tenant).get(URL, params)
    assert response.status_code == 400
    page = response.content.decode()
    assert message in html.unescape(page)
    assert "Showing the last 14 days instead." in page
    # Still a full page, on the default range.
    assert len(_chart(page, "usage-chart")["data"]["labels"]) == 14


def test_one_end_of_the_range_is_enough(viewer_of: Callable[[Any], Client], tenant: Any) -> None:
    response = viewer_of(tenant).get(URL, {"to": "2024-03-20"})
    assert response.status_code == 200
    labels = _chart(response.content.decode(), "usage-chart")["data"]["labels"]
    assert labels[0] == "2024-03-07"
    assert labels[-1] == "2024-03-20"


# --- latency ----------------------------------------------------------------------------


def test_ttft_percentiles_come_from_this_tenants_inbound_messages(
    viewer_of: Callable[[Any], Client],
    tenant: Any,
    connector: Any,
    rival: Any,
    make_message: Callable[..., Any],
) -> None:
    for ttft in (100.0, 200.0, 300.0, 400.0, 500.0):
        make_message(connector, ttft_ms=ttft)
    make_message(connector, ttft_ms=None, status="failed")  # never got a first token
    # Replies carry the same timings; counting them too would count every answer twice.
    make_message(connector, direction="out", ttft_ms=90_000.0)
    make_message(rival, ttft_ms=80_000.0)
    make_message(connector, ttft_ms=70_000.0, created_at=timezone.now() - timedelta(days=30))

    page = viewer_of(tenant).get(URL).content.decode()
    assert _card(page, "ttft-p50") == "300 ms"
    # Interpolated: 400 + 0.8 × (500 − 400).
    assert _card(page, "ttft-p95") == "480 ms"
    assert "Median of 5 replies" in page


def test_no_latency_yet_shows_a_dash(viewer_of: Callable[[Any], Client], tenant: Any) -> None:
    page = viewer_of(tenant).get(URL).content.decode()
    assert _card(page, "ttft-p50") == "—"
    assert _card(page, "ttft-p95") == "—"
    assert "No replies in this range" in page


# --- MAU --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("active", "level"), [(50, ""), (80, "warn"), (99, "warn"), (100, "bad"), (130, "bad")]
)
def test_mau_bar_turns_amber_at_80_and_red_at_100_percent(
    viewer_of: Callable[[Any], Client], tenant: Any, active: int, level: str, settings: Any
) -> None:
    from switchboard.licensing.services import limits_cache_clear
    from switchboard.metering.models import MauCounter
    from switchboard.metering.selectors import month_start

    settings.SWITCHBOARD_FREE_TIER = {**settings.SWITCHBOARD_FREE_TIER, "mau_limit": 100}
    limits_cache_clear()
    MauCounter.objects.create(tenant=tenant, month=month_start(), active=active)

    page = viewer_of(tenant).get(URL).content.decode()
    limits_cache_clear()
    assert _card(page, "mau") == str(active)
    card = page.split('id="card-mau"', 1)[1].split('id="card-ttft-p50"', 1)[0]
    assert f'class="bar {level}"' in card
    assert f"{active} % of 100" in card
    width = min(active, 100)
    assert f"width: {width}.0%" in card
    assert "free tier" in card


def test_mau_without_a_limit_says_so(
    viewer_of: Callable[[Any], Client], tenant: Any, settings: Any
) -> None:
    from switchboard.licensing.services import limits_cache_clear

    settings.SWITCHBOARD_FREE_TIER = {**settings.SWITCHBOARD_FREE_TIER, "mau_limit": None}
    limits_cache_clear()
    page = viewer_of(tenant).get(URL).content.decode()
    limits_cache_clear()
    assert "No MAU limit" in page


# --- errors and alerts ------------------------------------------------------------------


def test_recent_errors_list_failures_and_undeliverable_replies_of_this_tenant_only(
    viewer_of: Callable[[Any], Client],
    tenant: Any,
    connector: Any,
    rival: Any,
    make_message: Callable[..., Any],
) -> None:
    make_message(connector, status="failed", error="pool exhausted: no endpoint")
    make_message(connector, direction="out", status="undeliverable", error="callback 502 x5")
    make_message(connector, status="replied")
    make_message(connector, status="refused", refusal="mau")
    make_message(rival, status="failed", error="rival secret failure")

    errors = _section(viewer_of(tenant).get(URL).content.decode(), "recent-errors")
    assert "pool exhausted: no endpoint" in errors
    assert "callback 502 x5" in errors
    assert "Undeliverable" in errors
    assert "rival secret failure" not in errors
    assert errors.count("<tr>") == 3  # header and two errors


def test_recent_errors_stop_at_ten(
    viewer_of: Callable[[Any], Client],
    tenant: Any,
    connector: Any,
    make_message: Callable[..., Any],
) -> None:
    for i in range(12):
        make_message(connector, status="failed", error=f"boom {i:02d}")
    errors = _section(viewer_of(tenant).get(URL).content.decode(), "recent-errors")
    assert errors.count("boom ") == 10


def test_open_alerts_of_this_tenant_are_listed(
    viewer_of: Callable[[Any], Client], tenant: Any, other_tenant: Any
) -> None:
    from switchboard.metering.models import Alert
    from switchboard.metering.selectors import month_start

    month = month_start()
    common = {"subject": "tenant_mau", "month": month, "limit": 100, "message": "x"}
    Alert.objects.create(
        tenant=tenant, scope=f"tenant:{tenant.pk}", threshold_percent=80, value=81, **common
    )
    Alert.objects.create(
        tenant=tenant,
        scope=f"tenant:{tenant.pk}",
        threshold_percent=90,
        value=91,
        acknowledged_at=timezone.now(),
        **common,
    )
    Alert.objects.create(
        tenant=other_tenant,
        scope=f"tenant:{other_tenant.pk}",
        threshold_percent=100,
        value=104,
        **common,
    )
    alerts = _section(viewer_of(tenant).get(URL).content.decode(), "alerts")
    assert "reached 80 % of the licence limit, 81 of 100" in alerts
    assert "91 of 100" not in alerts  # acknowledged
    assert "104 of 100" not in alerts  # another tenant's


# --- tenant isolation -------------------------------------------------------------------


def test_another_tenants_usage_and_bots_never_show(
    viewer_of: Callable[[Any], Client], tenant: Any, bot: Any, rival: Any
) -> None:
    today = _today()
    _rollup(tenant, bot, today, requests=2, prompt_tokens=5)
    _rollup(rival.tenant, rival.bot, today, requests=500, prompt_tokens=5000)
    # A ledger row can name any bot id; one of another tenant is not named here.
    _rollup(tenant, rival.bot, today, requests=1)

    page = viewer_of(tenant).get(URL).content.decode()
    assert _card(page, "messages") == "3"
    assert _card(page, "tokens") == "5"
    assert "Rival bot" not in page
    assert "Globex" not in page
    assert "deleted bot" in _section(page, "busiest-bots")


# --- operators --------------------------------------------------------------------------


def test_operator_sees_installation_totals_busiest_tenants_and_model_mau(
    operator_client: Client, tenant: Any, bot: Any, rival: Any
) -> None:
    from switchboard.licensing.models import ModelLicence
    from switchboard.metering.models import MauCounter, ModelMauCounter
    from switchboard.metering.selectors import month_start

    today = _today()
    _rollup(tenant, bot, today, requests=2, ok=2, prompt_tokens=5)
    _rollup(rival.tenant, rival.bot, today, requests=5, ok=4, failed=1, completion_tokens=10)
    month = month_start()
    MauCounter.objects.create(tenant=tenant, month=month, active=30)
    MauCounter.objects.create(tenant=rival.tenant, month=month, active=12)
    ModelLicence.objects.create(
        model_name="Qwen-7B-Chat", licence_name="Tongyi Qianwen", mau_threshold=100
    )
    ModelMauCounter.objects.create(model_name="Qwen-7B-Chat", month=month, active=85)
    ModelMauCounter.objects.create(model_name="mystery-13b", month=month, active=3)
    ModelLicence.objects.create(model_name="huge-70b", licence_name="Huge", mau_threshold=10**8)
    ModelMauCounter.objects.create(model_name="huge-70b", month=month, active=205)

    page = operator_client.get(URL).content.decode()
    assert _card(page, "messages") == "7"
    assert _card(page, "tokens") == "15"
    assert _card(page, "mau") == "42"
    busiest = _section(page, "busiest-tenants")
    assert busiest.index("Globex") < busiest.index("Acme")
    models = _section(page, "model-mau")
    assert "Qwen-7B-Chat" in models and "Tongyi Qianwen" in models
    assert 'class="bar warn"' in models
    assert "85.00 %" in models
    assert "mystery-13b" in models and "not registered" in models
    # A handful of users against a threshold in the hundreds of millions is not "0 %".
    huge = models.split("huge-70b", 1)[1].split("</tr>", 1)[0]
    assert "&lt; 0.01 %" in huge
    chart = _chart(page, "usage-chart")
    assert chart["data"]["datasets"][0]["data"][-1] == 7


def test_operator_sees_every_tenants_errors_and_the_installations_alerts(
    operator_client: Client,
    connector: Any,
    rival: Any,
    make_message: Callable[..., Any],
) -> None:
    from switchboard.metering.models import Alert
    from switchboard.metering.selectors import month_start

    make_message(connector, status="failed", error="acme failure")
    make_message(rival, status="failed", error="globex failure")
    Alert.objects.create(
        scope="model:Qwen-7B-Chat",
        subject="model_mau",
        model_name="Qwen-7B-Chat",
        month=month_start(),
        threshold_percent=90,
        value=90,
        limit=100,
        message="x",
    )
    page = operator_client.get(URL).content.decode()
    errors = _section(page, "recent-errors")
    assert "acme failure" in errors and "globex failure" in errors
    assert "Globex" in errors
    alerts = _section(page, "alerts")
    assert "Qwen-7B-Chat: this installation" in html.unescape(alerts)
    assert "90 % of the model licence" in alerts


def test_the_overview_renders_in_chinese(viewer_of: Callable[[Any], Client], tenant: Any) -> None:
    client = viewer_of(tenant)
    client.post("/console/language/", {"language": "zh-hans", "next": URL})
    response = client.get(URL, {"from": "bad"})
    assert response.status_code == 400
    assert response["Content-Language"] == "zh-hans"
    assert client.get(URL).status_code == 200
