"""End users: the people talking to the tenant's bots, and its MAU month by month."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from django.core.paginator import Paginator
from django.db.models import Q, QuerySet, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from switchboard.bots.models import Connector
from switchboard.console.access import Access, console_view
from switchboard.console.views_overview import Gauge, chart_json
from switchboard.conversations.models import EndUser
from switchboard.licensing.services import effective_limits
from switchboard.metering import selectors
from switchboard.metering.models import MauCounter

PER_PAGE = 50
HISTORY_MONTHS = 12
# Longer than any external id or name worth typing; keeps a pasted essay out of the SQL.
MAX_QUERY = 200

# End users' channels are the connector kinds; naming them here keeps the filter free of
# a scan over the users, and the names translatable.
CHANNELS = {
    Connector.Kind.WEBHOOK.value: gettext_lazy("Webhook / API"),
    Connector.Kind.DINGTALK.value: gettext_lazy("DingTalk"),
    Connector.Kind.ALIGENIE.value: gettext_lazy("Tmall Genie"),
}


def _add_months(month: date, months: int) -> date:
    index = month.year * 12 + month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


@dataclass(frozen=True, slots=True)
class MauHistory:
    months: list[selectors.MauFigure]
    # The licence's MAU limit; None without one, or when looking at every tenant.
    limit: int | None

    @property
    def current(self) -> selectors.MauFigure:
        return self.months[-1]

    @property
    def gauge(self) -> Gauge:
        return Gauge(self.current.active, self.limit)


def mau_history(access: Access) -> MauHistory:
    tenant = access.tenant
    if tenant is not None:
        return MauHistory(
            months=selectors.mau_history(tenant, months=HISTORY_MONTHS),
            limit=effective_limits(tenant).mau_limit,
        )
    # Every tenant: end users belong to one tenant each, so the months' sums are the
    # installation's MAU. Limits are per tenant, so there is no line to draw against.
    last = selectors.month_start()
    first = _add_months(last, -(HISTORY_MONTHS - 1))
    sums = dict(
        access.scope(MauCounter.objects.filter(month__gte=first, month__lte=last))
        .values("month")
        .annotate(s_active=Sum("active"))
        .values_list("month", "s_active")
    )
    months = [_add_months(first, i) for i in range(HISTORY_MONTHS)]
    figures = [
        selectors.MauFigure(month=m, active=sums.get(m) or 0, over_limit=0, refused=0)
        for m in months
    ]
    return MauHistory(months=figures, limit=None)


def mau_chart(history: MauHistory) -> str:
    datasets: list[dict[str, Any]] = [
        {
            "type": "bar",
            "label": _("Monthly active users"),
            "data": [figure.active for figure in history.months],
        }
    ]
    if history.limit:
        datasets.append(
            {
                "type": "line",
                "label": _("Licence limit"),
                "data": [history.limit] * len(history.months),
                "borderColor": "#d92d20",
                "backgroundColor": "#d92d20",
                "borderDash": [6, 4],
                "pointRadius": 0,
                "fill": False,
            }
        )
    return chart_json(
        {
            "type": "bar",
            "data": {
                "labels": [f"{figure.month:%Y-%m}" for figure in history.months],
                "datasets": datasets,
            },
            "options": {
                "interaction": {"mode": "index", "intersect": False},
                "scales": {"y": {"beginAtZero": True}},
            },
        }
    )


def _search(end_users: QuerySet[EndUser], query: str, channel: str) -> QuerySet[EndUser]:
    if query:
        end_users = end_users.filter(
            Q(external_id__icontains=query) | Q(display_name__icontains=query)
        )
    if channel:
        end_users = end_users.filter(channel=channel)
    return end_users


@console_view()
def end_users(request: HttpRequest) -> HttpResponse:
    access: Access = request.access  # type: ignore[attr-defined]
    # PostgreSQL refuses NUL in text; a pasted one should find nothing, not fail.
    query = request.GET.get("q", "").replace("\x00", "").strip()[:MAX_QUERY]
    channel = request.GET.get("channel", "").replace("\x00", "").strip()[:MAX_QUERY]
    found = _search(access.scope(EndUser.objects.all()), query, channel)
    if access.tenant is None:
        found = found.select_related("tenant")
    # The pk breaks ties, so a page boundary never shows a user twice or skips one.
    found = found.order_by("-last_seen_at", "-pk")
    page = Paginator(found, PER_PAGE).get_page(request.GET.get("page"))
    context: dict[str, Any] = {
        "page": page,
        # A channel this page does not know (a newer connector) still shows, as stored.
        "rows": [(user, CHANNELS.get(user.channel, user.channel)) for user in page],
        "query": query,
        "channel": channel,
        "channels": list(CHANNELS.items()),
    }
    # A live search swaps only the results in; a history restore wants the whole page.
    if request.headers.get("HX-Request") and not request.headers.get("HX-History-Restore-Request"):
        return render(request, "console/users/_results.html", context)
    history = mau_history(access)
    context.update(history=history, chart=mau_chart(history))
    return render(request, "console/users/list.html", context)
