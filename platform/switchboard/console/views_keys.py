"""API keys: create (the key is shown once), list, revoke."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time
from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from switchboard.apikeys.models import ApiKey, Scope
from switchboard.apikeys.services import api_key_create, api_key_revoke
from switchboard.console.access import console_view
from switchboard.console.models import Role

# The plaintext waits in the server-side session for the one page that shows it; the
# default message storage is a readable cookie.
REVEAL_SESSION_KEY = "console_new_api_key"


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        label=gettext_lazy("Name"),
        max_length=100,
        help_text=gettext_lazy("What uses this key, e.g. “CRM integration”."),
    )
    scopes = forms.MultipleChoiceField(
        label=gettext_lazy("Scopes"),
        choices=[
            (Scope.READ.value, gettext_lazy("read: lists, usage, MAU and licence status")),
            (Scope.WRITE.value, gettext_lazy("write: create, change and delete")),
            (Scope.CHAT.value, gettext_lazy("chat: send messages and chat completions")),
        ],
        initial=[Scope.CHAT.value],
        widget=forms.CheckboxSelectMultiple,
    )
    expires_on = forms.DateField(
        label=gettext_lazy("Expires on"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text=gettext_lazy("Optional. The key stops working at the start of this day (UTC)."),
    )

    def clean_expires_on(self) -> Any:
        day = self.cleaned_data.get("expires_on")
        if day is not None and day <= timezone.now().date():
            raise forms.ValidationError(gettext_lazy("Pick a day after today."))
        return day


@console_view()
def key_list(request: HttpRequest) -> HttpResponse:
    access = request.access  # type: ignore[attr-defined]
    if access.tenant is None:
        # Keys belong to one tenant: an operator looking at all of them picks one first.
        return render(request, "console/keys/list.html", {"needs_tenant": True})
    keys = access.scope(ApiKey.objects.select_related("created_by")).order_by("-created_at")
    revealed = request.session.pop(REVEAL_SESSION_KEY, None)
    context: dict[str, Any] = {
        "keys": keys,
        "form": ApiKeyForm(),
        "revealed": revealed,
        "can_edit": access.can_edit,
    }
    return render(request, "console/keys/list.html", context)


@require_POST
@console_view(Role.ADMIN)
def key_create(request: HttpRequest) -> HttpResponse:
    access = request.access  # type: ignore[attr-defined]
    tenant = access.require_tenant()
    form = ApiKeyForm(request.POST)
    if not form.is_valid():
        keys = access.scope(ApiKey.objects.all())
        context = {"keys": keys, "form": form, "revealed": None, "can_edit": True}
        return render(request, "console/keys/list.html", context, status=400)
    day = form.cleaned_data.get("expires_on")
    key, plaintext = api_key_create(
        tenant=tenant,
        name=form.cleaned_data["name"],
        scopes=form.cleaned_data["scopes"],
        created_by=request.user,
        expires_at=datetime.combine(day, time.min, tzinfo=UTC) if day else None,
    )
    request.session[REVEAL_SESSION_KEY] = {"name": key.name, "key": plaintext}
    return redirect("console:keys")


@require_POST
@console_view(Role.ADMIN)
def key_revoke(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    access = request.access  # type: ignore[attr-defined]
    key = access.get_or_404(ApiKey.objects.all(), pk=pk)
    api_key_revoke(key=key)
    messages.success(request, _("The key “%(name)s” is revoked.") % {"name": key.name})
    return redirect("console:keys")
