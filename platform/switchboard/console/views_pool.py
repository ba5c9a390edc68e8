"""GPU pool (operators): every vLLM endpoint's health, load and throughput, and the
operator's levers on it (add, drain, enable, check health now)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import messages
from django.db.models import Count, Q, Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from switchboard.console.access import console_view
from switchboard.console.models import Role
from switchboard.metering.models import UsageRecord
from switchboard.pool import services
from switchboard.pool.models import InferenceEndpoint
from switchboard.pool.runtime import breaker_reports

# Above these shares of the KV cache an endpoint is close to preempting requests.
KV_WARN = 0.7
KV_BAD = 0.9
SHORT_WINDOW = timedelta(minutes=5)
LONG_WINDOW = timedelta(minutes=60)


class EndpointForm(forms.ModelForm):  # type: ignore[type-arg]
    url = forms.URLField(
        label=gettext_lazy("URL"),
        assume_scheme="http",
        help_text=gettext_lazy("Base URL without /v1, e.g. http://gpu-1:8000"),
    )

    class Meta:
        model = InferenceEndpoint
        fields = ["name", "url", "model", "weight", "max_concurrency"]
        labels = {
            "name": gettext_lazy("Name"),
            "model": gettext_lazy("Model"),
            "weight": gettext_lazy("Weight"),
            "max_concurrency": gettext_lazy("Max concurrency"),
        }
        help_texts = {
            "weight": gettext_lazy("Relative share of traffic."),
            "max_concurrency": gettext_lazy("Most requests one worker sends it at once."),
        }

    def clean_url(self) -> str:
        # The router appends /v1 itself; a trailing slash would make a second "unique" URL.
        return str(self.cleaned_data["url"]).rstrip("/")


@dataclass(frozen=True)
class Throughput:
    served_short: int = 0
    served_long: int = 0
    tokens_per_s: float = 0.0


@dataclass(frozen=True)
class PoolRow:
    endpoint: InferenceEndpoint
    throughput: Throughput
    # Workers reporting this endpoint's circuit in each state (closed/open/half_open).
    circuit: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def circuit_workers(self) -> int:
        return sum(self.circuit.values())

    @property
    def circuit_open(self) -> int:
        return self.circuit.get("open", 0)

    @property
    def circuit_half_open(self) -> int:
        return self.circuit.get("half_open", 0)

    @property
    def kv_percent(self) -> int | None:
        usage = self.endpoint.kv_cache_usage
        return None if usage is None else round(100 * min(max(usage, 0.0), 1.0))

    @property
    def kv_level(self) -> str:
        usage = self.endpoint.kv_cache_usage or 0.0
        return "bad" if usage >= KV_BAD else "warn" if usage >= KV_WARN else ""

    @property
    def prefix_hit_percent(self) -> float | None:
        rate = self.endpoint.prefix_cache_hit_rate
        return None if rate is None else 100 * rate


def _throughput_by_endpoint() -> dict[str, Throughput]:
    """Calls served per endpoint name over the last 5 and 60 minutes.

    The pool is shared by every tenant, so this aggregate spans them on purpose (the page
    is operator-only and shows no tenant's rows). The usage ledger is read rather than
    messages: its `created_at` index bounds the scan to the last hour.
    """
    now = timezone.now()
    short_since = now - SHORT_WINDOW
    served = Q(outcome__in=[UsageRecord.Outcome.OK, UsageRecord.Outcome.PARTIAL])
    rows = (
        UsageRecord.objects.filter(served, created_at__gte=now - LONG_WINDOW)
        .exclude(endpoint="")
        .values("endpoint")
        .annotate(
            served_long=Count("pk"),
            served_short=Count("pk", filter=Q(created_at__gte=short_since)),
            tokens_short=Sum("completion_tokens", filter=Q(created_at__gte=short_since)),
        )
    )
    return {
        row["endpoint"]: Throughput(
            served_short=row["served_short"],
            served_long=row["served_long"],
            tokens_per_s=(row["tokens_short"] or 0) / SHORT_WINDOW.total_seconds(),
        )
        for row in rows
    }


def _pool_context() -> dict[str, Any]:
    throughput = _throughput_by_endpoint()
    endpoints = list(InferenceEndpoint.objects.order_by("name"))
    circuits = breaker_reports([e.name for e in endpoints])
    rows = [
        PoolRow(
            endpoint, throughput.get(endpoint.name, Throughput()), circuits.get(endpoint.name, {})
        )
        for endpoint in endpoints
    ]
    taking = [r for r in rows if r.endpoint.enabled and not r.endpoint.draining]
    return {
        "rows": rows,
        "summary": {
            "endpoints": len(rows),
            "taking": len(taking),
            "healthy": sum(1 for r in taking if r.endpoint.healthy),
            "running": sum(r.endpoint.running or 0 for r in taking),
            "waiting": sum(r.endpoint.waiting or 0 for r in taking),
            "served_short": sum(r.throughput.served_short for r in rows),
        },
    }


@console_view(Role.OPERATOR)
def pool(request: HttpRequest, form: EndpointForm | None = None) -> HttpResponse:
    context = _pool_context()
    context["form"] = form or EndpointForm()
    return render(request, "console/pool/pool.html", context)


@console_view(Role.OPERATOR)
def pool_table(request: HttpRequest) -> HttpResponse:
    """Just the table, for htmx's periodic refresh of the pool page."""
    return render(request, "console/pool/_table.html", _pool_context())


@require_POST
@console_view(Role.OPERATOR)
def endpoint_add(request: HttpRequest) -> HttpResponse:
    form = EndpointForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("The endpoint was not added: see the form below."))
        return pool(request, form=form)
    # Saved through the model (not a queryset update) so the audit log records it.
    endpoint = form.save()
    messages.success(
        request,
        _("Endpoint %(name)s added; the next health check will probe it.")
        % {"name": endpoint.name},
    )
    return redirect("console:pool")


# action -> (field, value, message)
_TOGGLES: dict[str, tuple[str, bool, str]] = {
    "drain": ("draining", True, gettext_lazy("%(name)s is draining: no new requests.")),
    "undrain": ("draining", False, gettext_lazy("%(name)s takes new requests again.")),
    "enable": ("enabled", True, gettext_lazy("%(name)s enabled.")),
    "disable": ("enabled", False, gettext_lazy("%(name)s disabled.")),
}


@require_POST
@console_view(Role.OPERATOR)
def endpoint_toggle(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    if action not in _TOGGLES:
        raise Http404("no such action")
    field, value, done = _TOGGLES[action]
    endpoint = get_object_or_404(InferenceEndpoint, pk=pk)
    # Saving just this field keeps who-did-what in the audit log without overwriting the
    # health figures the checker may be writing at the same moment.
    if getattr(endpoint, field) != value:
        setattr(endpoint, field, value)
        endpoint.save(update_fields=[field])
    messages.success(request, str(done) % {"name": endpoint.name})
    return redirect("console:pool")


@require_POST
@console_view(Role.OPERATOR)
def check_health(request: HttpRequest) -> HttpResponse:
    results = services.pool_health_check()
    down = sorted(name for name, healthy in results.items() if not healthy)
    if not results:
        messages.warning(request, _("No enabled endpoint to check."))
    elif down:
        messages.warning(request, _("Unhealthy: %(names)s") % {"names": ", ".join(down)})
    else:
        messages.success(
            request,
            _("All %(count)d enabled endpoint(s) healthy.") % {"count": len(results)},
        )
    return redirect("console:pool")
