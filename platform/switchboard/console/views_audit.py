"""Audit log (operators): who changed what, when and from where, as django-auditlog
recorded it (the audited models are registered in console/signals.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from auditlog.models import LogEntry
from auditlog.registry import auditlog
from django import forms
from django.contrib.contenttypes.models import ContentType
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.text import capfirst
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from switchboard.console.access import console_view
from switchboard.console.models import Role

PAGE_SIZE = 50
# A changed value longer than this is cut in the list (secrets are masked at write time).
VALUE_CHARS = 200

ACTION_CHOICES = [
    ("", gettext_lazy("Any action")),
    (str(LogEntry.Action.CREATE), gettext_lazy("create")),
    (str(LogEntry.Action.UPDATE), gettext_lazy("update")),
    (str(LogEntry.Action.DELETE), gettext_lazy("delete")),
    (str(LogEntry.Action.ACCESS), gettext_lazy("access")),
]


def _model_choices() -> list[tuple[str, str]]:
    types = ContentType.objects.get_for_models(*auditlog.get_models())
    named = sorted(
        (str(capfirst(model._meta.verbose_name)), str(ct.pk)) for model, ct in types.items()
    )
    return [("", _("All models"))] + [(pk, name) for name, pk in named]


class AuditFilter(forms.Form):
    actor = forms.CharField(
        label=gettext_lazy("Actor"),
        required=False,
        widget=forms.TextInput(attrs={"type": "search", "placeholder": gettext_lazy("username")}),
    )
    model = forms.ChoiceField(label=gettext_lazy("Model"), required=False)
    action = forms.ChoiceField(label=gettext_lazy("Action"), choices=ACTION_CHOICES, required=False)
    since = forms.DateField(
        label=gettext_lazy("From"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        label=gettext_lazy("To"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )

    def __init__(self, data: Any) -> None:
        super().__init__(data)
        # Read per request: the registry is only complete once every app has loaded.
        self.fields["model"].choices = _model_choices()  # type: ignore[attr-defined]


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=timezone.get_current_timezone())


def _filtered(form: AuditFilter) -> QuerySet[LogEntry]:
    entries = LogEntry.objects.select_related("actor", "content_type")
    # An invalid field (a mistyped date) is ignored rather than emptying the whole list.
    form.is_valid()
    data = form.cleaned_data
    if data.get("actor"):
        entries = entries.filter(actor__username__icontains=data["actor"].strip())
    if data.get("model"):
        entries = entries.filter(content_type_id=int(data["model"]))
    if data.get("action"):
        entries = entries.filter(action=int(data["action"]))
    if data.get("since"):
        entries = entries.filter(timestamp__gte=_day_start(data["since"]))
    if data.get("until"):
        entries = entries.filter(timestamp__lt=_day_start(data["until"] + timedelta(days=1)))
    return entries.order_by("-timestamp", "-pk")


@dataclass(frozen=True)
class Change:
    field: str
    old: str
    new: str
    # A secret: the page says it changed, never what to.
    masked: bool = False


def _masked_fields(entry: LogEntry) -> set[str]:
    model = entry.content_type.model_class()
    if model is None or not auditlog.contains(model):
        return set()
    # auditlog's default mask hides only the first half of a value, so what it stored
    # still holds the rest of the secret: the console shows none of it.
    return set(auditlog.get_model_fields(model)["mask_fields"])


def _changes(entry: LogEntry) -> list[Change]:
    masked = _masked_fields(entry)
    rows = []
    for field, values in (entry.changes_dict or {}).items():
        if field in masked:
            rows.append(Change(field, "", "", masked=True))
            continue
        if isinstance(values, list | tuple) and len(values) == 2:
            old, new = (str(v)[:VALUE_CHARS] for v in values)
            if entry.action == LogEntry.Action.CREATE:
                old = ""  # always "None": nothing was there before
        else:
            # Many-to-many changes are recorded as a dict of what was added and removed.
            old, new = "", str(values)[:VALUE_CHARS]
        rows.append(Change(field, old, new))
    return rows


@console_view(Role.OPERATOR)
def audit_log(request: HttpRequest) -> HttpResponse:
    form = AuditFilter(request.GET)
    page = Paginator(_filtered(form), PAGE_SIZE).get_page(request.GET.get("page"))
    rows = [(entry, _changes(entry)) for entry in page]
    return render(request, "console/audit/log.html", {"form": form, "page": page, "rows": rows})
