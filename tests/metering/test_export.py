"""Usage CSV export (function, command, admin action) and the metering admin pages."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from switchboard.metering.export import RECORD_HEADER, ROLLUP_HEADER, usage_csv_rows
from switchboard.metering.models import Alert, UsageRecord, UsageRollup
from switchboard.metering.rollups import rollups_update
from tests.metering.test_rollups import T0, make_record

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


@pytest.fixture
def usage(tenant: Any, bot: Any) -> dict[str, Any]:
    from switchboard.bots.services import bot_create
    from switchboard.tenants.models import Tenant

    sneaky = bot_create(tenant=tenant, name="=HYPERLINK(1)", system_prompt="x")
    message_id = uuid.uuid4()
    first = make_record(
        tenant.pk,
        at=T0 + timedelta(hours=1, minutes=5),
        bot_id=bot.pk,
        ttft_ms=120.25,
        latency_ms=1500.5,
        endpoint="gpu-1",
        model_name="Qwen/Qwen-7B-Chat",
        message_id=message_id,
    )
    make_record(tenant.pk, at=T0 + timedelta(hours=1, minutes=40), bot_id=bot.pk, ttft_ms=None)
    make_record(tenant.pk, at=T0 + timedelta(hours=30), bot_id=sneaky.pk, outcome="partial")
    make_record(tenant.pk, at=T0 + 3 * DAY, bot_id=bot.pk)  # outside the range asked for
    other = Tenant.objects.create(name="Other", slug=f"other-{uuid.uuid4().hex[:8]}")
    make_record(other.pk, at=T0 + timedelta(hours=1), prompt_tokens=7777)
    rollups_update(now=T0 + 5 * DAY)
    return {"first": first, "message_id": message_id, "sneaky": sneaky}


def rows_of(tenant: Any, period: str, days: int = 2) -> list[list[str]]:
    return list(usage_csv_rows(tenant, period=period, start=T0, end=T0 + days * DAY))  # type: ignore[arg-type]


def test_daily_rows(tenant: Any, bot: Any, usage: Any) -> None:
    rows = rows_of(tenant, "day")
    assert rows[0] == ROLLUP_HEADER
    table = [dict(zip(ROLLUP_HEADER, row, strict=True)) for row in rows[1:]]
    assert [(r["bucket_start_utc"], r["bot_name"]) for r in table] == [
        ("2026-11-01T00:00:00Z", "Helper"),
        ("2026-11-02T00:00:00Z", "'=HYPERLINK(1)"),
    ]
    day1 = table[0]
    assert day1 == {
        "period": "day",
        "bucket_start_utc": "2026-11-01T00:00:00Z",
        "bot_id": str(bot.pk),
        "bot_name": "Helper",
        "requests": "2",
        "ok": "2",
        "failed": "0",
        "prompt_tokens": "20",
        "completion_tokens": "40",
        "mean_ttft_ms": "120.250",
        "mean_latency_ms": "1000.250",
    }
    assert table[1]["failed"] == "1"


def test_hourly_rows_and_a_deleted_bot(tenant: Any, usage: Any) -> None:
    usage["sneaky"].delete()
    rows = rows_of(tenant, "hour")
    assert [(r[1], r[3], r[4]) for r in rows[1:]] == [
        ("2026-11-01T01:00:00Z", "Helper", "2"),
        ("2026-11-02T06:00:00Z", "deleted bot", "1"),
    ]


def test_record_rows(tenant: Any, bot: Any, usage: Any) -> None:
    rows = rows_of(tenant, "records")
    assert rows[0] == RECORD_HEADER
    assert len(rows) == 1 + 3
    first = dict(zip(RECORD_HEADER, rows[1], strict=True))
    assert first == {
        "id": str(usage["first"].id),
        "created_at_utc": "2026-11-01T01:05:00Z",
        "bot_id": str(bot.pk),
        "connector_id": "",
        "end_user_id": "",
        "message_id": str(usage["message_id"]),
        "endpoint": "gpu-1",
        "model_name": "Qwen/Qwen-7B-Chat",
        "prompt_tokens": "10",
        "completion_tokens": "20",
        "ttft_ms": "120.250",
        "latency_ms": "1500.500",
        "outcome": "ok",
    }
    assert rows[2][RECORD_HEADER.index("ttft_ms")] == ""


def test_records_include_rows_the_rollups_have_not_reached(tenant: Any, usage: Any) -> None:
    make_record(tenant.pk, at=T0 + timedelta(hours=2))  # after the rollups ran
    assert len(rows_of(tenant, "records")) == 1 + 4
    assert len(rows_of(tenant, "hour")) == 1 + 2


def test_empty_tenant_gets_a_header_only(tenant: Any) -> None:
    for period, header in (("day", ROLLUP_HEADER), ("records", RECORD_HEADER)):
        assert rows_of(tenant, period) == [header]


def test_bad_arguments(tenant: Any) -> None:
    with pytest.raises(ValueError, match="period"):
        usage_csv_rows(tenant, period="week", start=T0, end=T0 + DAY)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="aware"):
        usage_csv_rows(tenant, period="day", start=T0.replace(tzinfo=None), end=T0 + DAY)


def test_export_command_to_stdout_and_to_a_file(tenant: Any, usage: Any, tmp_path: Path) -> None:
    out = io.StringIO()
    args = ["--tenant", tenant.slug, "--from", "2026-11-01", "--to", "2026-11-03"]
    call_command("export_usage", *args, stdout=out)
    parsed = list(csv.reader(io.StringIO(out.getvalue())))
    assert parsed == rows_of(tenant, "day")
    assert "\r\n" in out.getvalue()  # RFC 4180 line ends, no extra blank lines
    assert "\r\n\n" not in out.getvalue()

    target = tmp_path / "usage.csv"
    err = io.StringIO()
    call_command("export_usage", *args, "--period", "records", "--out", str(target), stderr=err)
    with target.open(newline="", encoding="utf-8") as f:
        assert list(csv.reader(f)) == rows_of(tenant, "records")
    assert "Wrote 3 rows" in err.getvalue()


def test_export_command_refuses_bad_input(tenant: Any) -> None:
    with pytest.raises(CommandError, match="no tenant"):
        call_command(
            "export_usage", "--tenant", "nope", "--from", "2026-11-01", "--to", "2026-12-01"
        )
    with pytest.raises(CommandError, match="after"):
        call_command(
            "export_usage", "--tenant", tenant.slug, "--from", "2026-11-02", "--to", "2026-11-01"
        )
    with pytest.raises(CommandError):
        call_command(
            "export_usage", "--tenant", tenant.slug, "--from", "11/01/2026", "--to", "2026-12-01"
        )


# --- admin --------------------------------------------------------------------------


def test_ledger_admin_is_read_only(admin_client: Any, tenant: Any, usage: Any) -> None:
    usage["sneaky"].delete()  # its rows must still render
    listing = admin_client.get(reverse("admin:metering_usagerecord_changelist"))
    assert listing.status_code == 200
    assert b"delete_selected" not in listing.content
    record = UsageRecord.objects.filter(bot_id=usage["sneaky"].pk).get()
    change = admin_client.get(reverse("admin:metering_usagerecord_change", args=[record.pk]))
    assert change.status_code == 200
    assert b'name="_save"' not in change.content
    assert admin_client.get(reverse("admin:metering_usagerecord_add")).status_code == 403
    assert (
        admin_client.post(
            reverse("admin:metering_usagerecord_delete", args=[record.pk])
        ).status_code
        == 403
    )


def test_rollup_admin_filters_and_exports_the_selection(
    admin_client: Any, tenant: Any, usage: Any
) -> None:
    url = reverse("admin:metering_usagerollup_changelist")
    assert (
        admin_client.get(url, {"period__exact": "day", "tenant__id__exact": tenant.pk}).status_code
        == 200
    )
    rollup = UsageRollup.objects.filter(tenant=tenant, period="day").order_by("bucket").first()
    assert (
        admin_client.get(reverse("admin:metering_usagerollup_change", args=[rollup.pk])).status_code
        == 200
    )
    assert admin_client.get(reverse("admin:metering_usagerollup_add")).status_code == 403

    chosen = UsageRollup.objects.filter(tenant=tenant, period="day", bucket__lt=T0 + 2 * DAY)
    response = admin_client.post(
        url,
        {"action": "export_csv", "_selected_action": [str(r.pk) for r in chosen]},
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    body = b"".join(response.streaming_content).decode()
    parsed = list(csv.reader(io.StringIO(body)))
    assert parsed == rows_of(tenant, "day")


def test_composite_key_models_are_not_in_the_admin() -> None:
    from django.contrib import admin

    from switchboard.metering.models import MauCounter, MonthlyActiveUser

    assert not admin.site.is_registered(MauCounter)
    assert not admin.site.is_registered(MonthlyActiveUser)


def test_alert_admin_acknowledges(admin_client: Any, tenant: Any) -> None:
    alerts = [
        Alert.objects.create(
            scope=f"tenant:{tenant.pk}",
            subject="tenant_mau",
            tenant=tenant,
            month=date(2026, 11, 1),
            threshold_percent=percent,
            value=percent,
            limit=100,
            message=f"{percent} %",
        )
        for percent in (80, 90)
    ]
    url = reverse("admin:metering_alert_changelist")
    listing = admin_client.get(url, {"acknowledged_at__isempty": "1"})
    assert listing.status_code == 200 and b"80 %" in listing.content
    assert (
        admin_client.get(reverse("admin:metering_alert_change", args=[alerts[0].pk])).status_code
        == 200
    )
    response = admin_client.post(
        url, {"action": "acknowledge", "_selected_action": [str(alerts[0].pk)]}
    )
    assert response.status_code == 302
    alerts[0].refresh_from_db()
    alerts[1].refresh_from_db()
    assert alerts[0].acknowledged_at is not None and alerts[1].acknowledged_at is None
    assert admin_client.get(reverse("admin:metering_alert_add")).status_code == 403
