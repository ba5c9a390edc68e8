"""Webhooks / delivery log (tenant): every outbound reply, each try at delivering it,
and replay for tenant admins through the same service the Django admin's action uses."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time, timedelta
from typing import Any

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from switchboard.bots.models import Connector
from switchboard.console.access import console_view
from switchboard.console.models import Role
from switchboard.conversations import delivery
from switchboard.conversations.models import DeliveryAttempt, Message

PAGE_SIZE = 50

STATUS_CHOICES = [
    ("", gettext_lazy("Any status")),
    (Message.Status.PENDING, gettext_lazy("Pending")),
    (Message.Status.DELIVERED, gettext_lazy("Delivered")),
    (Message.Status.UNDELIVERABLE, gettext_lazy("Undeliverable")),
]


class DeliveryFilter(forms.Form):
    status = forms.ChoiceField(label=gettext_lazy("Status"), choices=STATUS_CHOICES, required=False)
    connector = forms.ModelChoiceField(
        label=gettext_lazy("Connector"),
        queryset=Connector.objects.none(),
        required=False,
        empty_label=gettext_lazy("All connectors"),
    )
    since = forms.DateField(
        label=gettext_lazy("From"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        label=gettext_lazy("To"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )

    def __init__(self, data: Any, *, connectors: QuerySet[Connector]) -> None:
        super().__init__(data)
        # Only the connectors in view can be picked: another tenant's id is "not a choice".
        self.fields["connector"].queryset = connectors  # type: ignore[attr-defined]


# The console's own test chat shows replies in-app as they are written: nothing goes out
# through it, so it has no place in a delivery log.
IN_APP_KINDS = ("console",)


def _outbound() -> QuerySet[Message]:
    return Message.objects.filter(direction=Message.Direction.OUTBOUND).exclude(
        connector__kind__in=IN_APP_KINDS
    )


def _day_start(day: date) -> datetime:
    # Whole days in the installation's time zone; a bound on created_at itself (not on
    # its date) lets the (tenant, created_at) index do the work.
    return datetime.combine(day, time.min, tzinfo=timezone.get_current_timezone())


def _filtered(request: HttpRequest, form: DeliveryFilter) -> QuerySet[Message]:
    replies = request.access.scope(_outbound())  # type: ignore[attr-defined]
    # An invalid field (a mistyped date) is ignored rather than emptying the whole list.
    form.is_valid()
    data = form.cleaned_data
    if data.get("status"):
        replies = replies.filter(status=data["status"])
    if data.get("connector"):
        replies = replies.filter(connector=data["connector"])
    if data.get("since"):
        replies = replies.filter(created_at__gte=_day_start(data["since"]))
    if data.get("until"):
        replies = replies.filter(created_at__lt=_day_start(data["until"] + timedelta(days=1)))
    last = DeliveryAttempt.objects.filter(message=OuterRef("pk")).order_by("-created_at", "-pk")
    return (
        replies.select_related("connector", "conversation__bot", "tenant")
        .annotate(
            last_outcome=Subquery(last.values("outcome")[:1]),
            last_http_status=Subquery(last.values("http_status")[:1]),
        )
        .order_by("-created_at", "-pk")
    )


@console_view()
def delivery_list(request: HttpRequest) -> HttpResponse:
    access = request.access  # type: ignore[attr-defined]
    connectors = access.scope(Connector.objects.exclude(kind__in=IN_APP_KINDS)).order_by("name")
    form = DeliveryFilter(request.GET, connectors=connectors)
    page = Paginator(_filtered(request, form), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "console/deliveries/list.html",
        {"form": form, "page": page, "show_tenant": access.tenant is None},
    )


@console_view()
def delivery_detail(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    access = request.access  # type: ignore[attr-defined]
    reply = access.get_or_404(
        _outbound().select_related(
            "connector", "conversation__bot", "conversation__end_user", "reply_to", "tenant"
        ),
        pk=pk,
    )
    attempts = access.scope(DeliveryAttempt.objects.filter(message=reply)).order_by(
        "created_at", "pk"
    )
    return render(
        request,
        "console/deliveries/detail.html",
        {
            "reply": reply,
            "attempts": attempts,
            # Voice replies are answered inside the speaker's request: nothing to resend.
            "voice": reply.connector.kind == Connector.Kind.ALIGENIE,
        },
    )


@require_POST
@console_view(Role.ADMIN)
def delivery_replay(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    reply = request.access.get_or_404(_outbound(), pk=pk)  # type: ignore[attr-defined]
    # The same service as the admin's "replay" action: it decides what can be replayed
    # and queues the delivery task once the transaction commits.
    if delivery.reply_replay(message_id=reply.pk):
        messages.success(request, _("The reply was queued for delivery again."))
    else:
        messages.warning(
            request,
            _(
                "This reply cannot be replayed: voice replies are answered within the call, "
                "and a disabled connector sends nothing."
            ),
        )
    return redirect("console:delivery_detail", pk=reply.pk)
