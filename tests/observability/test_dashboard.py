"""docker/grafana/switchboard.json: valid JSON whose every query names metrics that a
real scrape serves, so a renamed metric cannot leave a silently empty panel."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langchain_core.messages import AIMessage

from tests.observability.conftest import Scrape
from tests.support.processes import REPO_ROOT

DASHBOARD = REPO_ROOT / "docker" / "grafana" / "switchboard.json"
# Every metric this project exports starts with one of these; PromQL functions, label
# names and keywords do not.
METRIC = re.compile(r"\b(?:switchboard|django_http|process|python)_[A-Za-z0-9_:]*")
# Sample suffixes a family of each type may serve under (counters: _total, histograms:
# _bucket/_sum/_count).
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}


def _expressions(node: Any) -> Iterator[str]:
    """Every PromQL string of the dashboard: panel targets and template variables."""
    if isinstance(node, dict):
        for key, value in node.items():
            # A variable's "query" may be a PromQL string or an object holding one.
            promql = key in ("expr", "definition") or (key == "query" and "(" in str(value))
            if promql and isinstance(value, str):
                yield value
            else:
                yield from _expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from _expressions(item)


def _served(name: str, scrape: Scrape) -> bool:
    if name in scrape.sample_names():
        return True
    for family in scrape.families.values():
        for suffix in SUFFIXES.get(family.type, ("",)):
            if name == family.name + suffix:
                return True
    return False


def test_the_dashboard_is_valid_json_with_panels_and_queries() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["uid"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 15
    for panel in panels:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert METRIC.search(target["expr"]), f"{target['expr']!r} names no metric"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


@pytest.mark.django_db(transaction=True)
def test_every_metric_the_dashboard_queries_is_in_a_scrape(
    scrape: Callable[..., Scrape],
    send_webhook: Callable[..., Any],
    tenant: Any,
    connector: Any,
    purge_queues: None,
) -> None:
    from django.test import Client

    from switchboard.conversations import services
    from switchboard.conversations.models import Message

    # Real work first, so counters and histograms have samples, not just their headers.
    assert send_webhook(connector, "erin").status_code == 202
    services.reply_record(
        inbound=Message.objects.select_related("conversation__bot").get(direction="in"),
        reply=AIMessage(
            content="ok",
            response_metadata={
                "token_usage": {"prompt_tokens": 3, "completion_tokens": 2},
                "endpoint": "gpu-1",
                "ttft_ms": 50.0,
                "latency_ms": 70.0,
                "finish_reason": "stop",
            },
        ),
    )
    Client().get("/healthz")
    served = scrape()

    names = {
        m for expr in _expressions(json.loads(DASHBOARD.read_text())) for m in METRIC.findall(expr)
    }
    assert len(names) >= 20
    missing = sorted(name for name in names if not _served(name, served))
    assert not missing, f"the dashboard queries metrics /metrics does not serve: {missing}"
