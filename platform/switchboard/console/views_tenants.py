"""Tenants and licences: operator pages (to tenant users they do not exist: 404)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from switchboard.bots.models import Bot
from switchboard.console.access import console_view
from switchboard.console.forms import LicenceImportForm, TenantForm
from switchboard.console.models import Role
from switchboard.licensing.documents import LicenceError
from switchboard.licensing.limits import Limits
from switchboard.licensing.models import Licence
from switchboard.licensing.services import effective_limits, licence_current, licence_import
from switchboard.metering.selectors import MauFigure, mau_current
from switchboard.tenants.models import Tenant

PER_PAGE = 50


@dataclass(frozen=True)
class TenantRow:
    tenant: Tenant
    mau: MauFigure
    limits: Limits

    @property
    def mau_percent(self) -> float | None:
        if not self.limits.mau_limit:
            return None
        return 100 * self.mau.active / self.limits.mau_limit


@dataclass(frozen=True)
class LicenceRow:
    licence: Licence
    status: str
    label: Any


def _page(request: HttpRequest, queryset: QuerySet[Any]) -> Page:
    return Paginator(queryset, PER_PAGE).get_page(request.GET.get("page"))


def _licence_rows(licences: list[Licence]) -> list[LicenceRow]:
    """Each licence with its state; "in force" is the one `licence_current` picks."""
    now = timezone.now()
    in_force = {
        current.pk
        for current in (licence_current(t, now) for t in {lic.tenant_id for lic in licences})
        if current is not None
    }
    rows = []
    for licence in licences:
        if licence.pk in in_force:
            status, label = "ok", _("in force")
        elif now < licence.valid_from:
            status, label = "warn", _("not yet valid")
        elif now >= licence.valid_until:
            status, label = "", _("expired")
        else:
            status, label = "", _("superseded")
        rows.append(LicenceRow(licence=licence, status=status, label=label))
    return rows


@console_view(Role.OPERATOR)
def tenant_list(request: HttpRequest) -> HttpResponse:
    page = _page(request, Tenant.objects.order_by("name"))
    # One lookup per tenant on the page: MAU is a primary-key read, and the limits come
    # from the per-process cache the ingress uses.
    rows = [TenantRow(tenant=t, mau=mau_current(t), limits=effective_limits(t)) for t in page]
    return render(request, "console/tenants/list.html", {"page": page, "rows": rows})


@console_view(Role.OPERATOR)
def tenant_create(request: HttpRequest) -> HttpResponse:
    form = TenantForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        tenant = form.save()
        messages.success(
            request,
            gettext("Tenant “%(name)s” created. Import its licence, or it runs on the free tier.")
            % {"name": tenant.name},
        )
        return redirect("console:tenant_detail", pk=tenant.pk)
    return render(request, "console/tenants/form.html", {"form": form})


@console_view(Role.OPERATOR)
def tenant_detail(request: HttpRequest, pk: Any) -> HttpResponse:
    tenant = get_object_or_404(Tenant, pk=pk)
    licences = list(Licence.objects.filter(tenant=tenant).select_related("tenant"))
    limits = effective_limits(tenant)
    context = {
        "tenant": tenant,
        "mau": mau_current(tenant),
        "limits": limits,
        "limit_kinds": sorted(limits.connector_kinds) if limits.connector_kinds else None,
        "licence_rows": _licence_rows(licences),
        "bot_count": Bot.objects.for_tenant(tenant).count(),
    }
    return render(request, "console/tenants/detail.html", context)


@console_view(Role.OPERATOR)
def tenant_set_active(request: HttpRequest, pk: Any) -> HttpResponse:
    """Suspend or reactivate; GET asks for confirmation, POST does it."""
    tenant = get_object_or_404(Tenant, pk=pk)
    if request.method != "POST":
        return render(request, "console/tenants/confirm_active.html", {"tenant": tenant})
    tenant.is_active = request.POST.get("active") == "1"
    # save() rather than update(): the audit log records who suspended whom.
    tenant.save(update_fields=["is_active"])
    if tenant.is_active:
        messages.success(request, gettext("Tenant “%(name)s” reactivated.") % {"name": tenant.name})
    else:
        messages.warning(
            request,
            gettext(
                "Tenant “%(name)s” suspended: its users cannot sign in and its bots accept "
                "no messages."
            )
            % {"name": tenant.name},
        )
    return redirect("console:tenant_detail", pk=tenant.pk)


@console_view(Role.OPERATOR)
def licence_list(request: HttpRequest) -> HttpResponse:
    # The operator's tenant pick narrows the ledger to that tenant.
    licences = request.access.scope(  # type: ignore[attr-defined]
        Licence.objects.select_related("tenant").order_by("tenant__name", "-issued_at", "-id")
    )
    page = _page(request, licences)
    return render(
        request, "console/licences/list.html", {"page": page, "rows": _licence_rows(list(page))}
    )


@console_view(Role.OPERATOR)
def licence_import_page(request: HttpRequest) -> HttpResponse:
    posted = request.method == "POST"
    form = LicenceImportForm(request.POST, request.FILES) if posted else LicenceImportForm()
    if posted and form.is_valid():
        try:
            licence = licence_import(
                text=form.cleaned_data["text"], imported_by=request.user.get_username()
            )
        except LicenceError as exc:
            # licence_import changed nothing; say why, in the words of the check that failed.
            form.add_error(None, gettext("Licence refused: %(reason)s") % {"reason": exc})
        else:
            messages.success(
                request,
                gettext("Imported licence %(id)s for %(tenant)s, valid %(start)s to %(end)s UTC.")
                % {
                    "id": licence.licence_id,
                    "tenant": licence.tenant.name,
                    "start": f"{licence.valid_from:%Y-%m-%d %H:%M}",
                    "end": f"{licence.valid_until:%Y-%m-%d %H:%M}",
                },
            )
            return redirect("console:tenant_detail", pk=licence.tenant_id)
    return render(request, "console/licences/import.html", {"form": form})
