"""Bots and their connectors: viewers read, tenant admins edit.

Everything is fetched through `request.access`, so another tenant's bot or connector
is a 404 whatever the URL says. Connector secrets are write-only: the webhook signing
secret, the AliGenie URL token and a generated AliGenie public key are shown once,
right after they are made, and never rendered again.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from connectors.aligenie import public_key_pem
from switchboard.bots import services
from switchboard.bots.models import Bot, Connector
from switchboard.console.access import console_view
from switchboard.console.forms import (
    CONNECTOR_FORMS,
    KIND_LABELS,
    BotForm,
    ConnectorForm,
    PreviewForm,
    add_model_errors,
)
from switchboard.console.models import Role
from switchboard.conversations.prompts import build_chat_messages

# Secrets to show once, kept server-side in the session (not in the messages cookie)
# until the connector's page next renders: {connector id: [[label, value], ...]}.
REVEAL_SESSION_KEY = "console_reveal"
# Stands in for the AliGenie URL token wherever the URL is shown after the first time.
_HIDDEN_SEGMENT = "HIDDEN-SEGMENT"

# The fields `services.bot_create` takes; the form's other fields are set after it.
_BOT_CREATE_ARGS = (
    "name",
    "system_prompt",
    "model_name",
    "temperature",
    "max_tokens",
    "history_window",
)

# A sample conversation for the prompt preview, oldest first, as (direction, text).
_SAMPLE_HISTORY = [
    ("in", _("Hello, when are you open?")),
    ("out", _("We are open from 9:00 to 18:00, Monday to Friday.")),
    ("in", _("And on public holidays?")),
    ("out", _("We are closed on public holidays.")),
]
_SAMPLE_INPUT = _("Can I visit next Monday morning?")
_ROLE_LABELS = {"system": _("System"), "user": _("User"), "assistant": _("Assistant")}


def _posted(request: HttpRequest) -> Any:
    # Not `request.POST or None`: a POST with every box empty must still be validated.
    return request.POST if request.method == "POST" else None


def _bots(request: HttpRequest) -> QuerySet[Bot]:
    return request.access.scope(Bot.objects.select_related("tenant"))  # type: ignore[attr-defined]


def _bot(request: HttpRequest, pk: Any) -> Bot:
    return request.access.get_or_404(Bot.objects.select_related("tenant"), pk=pk)  # type: ignore[attr-defined]


def _connectors(request: HttpRequest, bot: Bot) -> QuerySet[Connector]:
    # Scoped by tenant and by the bot in the URL: a connector of another bot is not here.
    # Only the channel kinds managed on these pages: internal ones (the test chat's) are
    # made and used elsewhere.
    return request.access.scope(  # type: ignore[attr-defined]
        Connector.objects.filter(bot=bot, kind__in=list(CONNECTOR_FORMS))
    )


def _connector(request: HttpRequest, bot: Bot, pk: Any) -> Connector:
    return request.access.get_or_404(_connectors(request, bot), pk=pk)  # type: ignore[attr-defined]


def _reveal(request: HttpRequest, connector: Connector, label: str, value: str) -> None:
    pending = request.session.get(REVEAL_SESSION_KEY, {})
    pending.setdefault(str(connector.pk), []).append([label, value])
    request.session[REVEAL_SESSION_KEY] = pending


def _take_reveals(request: HttpRequest, connector: Connector) -> list[list[str]]:
    pending = request.session.get(REVEAL_SESSION_KEY, {})
    shown = pending.pop(str(connector.pk), [])
    if shown:
        request.session[REVEAL_SESSION_KEY] = pending
    return shown


def ingress_url(request: HttpRequest, connector: Connector, *, with_token: bool = False) -> str:
    """The absolute URL to paste into DingTalk, AliGenie or the tenant's system; empty
    for DingTalk Stream mode, which connects out. AliGenie's URL carries its secret
    token, so it is masked unless `with_token`."""
    pk = str(connector.pk)
    if connector.kind == Connector.Kind.ALIGENIE:
        token = connector.path_token if with_token else _HIDDEN_SEGMENT
        url = request.build_absolute_uri(reverse("hooks:aligenie", args=[pk, token]))
        return url if with_token else url.replace(_HIDDEN_SEGMENT, "••••••")
    if connector.kind == Connector.Kind.DINGTALK:
        if connector.dingtalk_mode == Connector.DingTalkMode.STREAM:
            return ""
        return request.build_absolute_uri(reverse("hooks:dingtalk", args=[pk]))
    return request.build_absolute_uri(reverse("hooks:webhook", args=[pk]))


def _ownership_url(request: HttpRequest, connector: Connector) -> str:
    if connector.kind != Connector.Kind.ALIGENIE or not connector.ownership_file_name:
        return ""
    name = connector.ownership_file_name.removesuffix(".txt")
    return request.build_absolute_uri(reverse("aligenie-ownership", args=[name]))


def _preview_messages(
    *, system_prompt: str, voice_instructions: str, history_window: int
) -> dict[str, Any]:
    """What the model is sent for a sample conversation, as the reply pipeline builds it
    (conversations.prompts), for text channels and for voice."""
    history = [(direction, str(text)) for direction, text in _SAMPLE_HISTORY]
    history = history[-history_window:] if history_window > 0 else []

    def labelled(prompt: str) -> list[dict[str, Any]]:
        built = build_chat_messages(
            system_prompt=prompt, history=history, user_text=str(_SAMPLE_INPUT)
        )
        return [{**m, "label": _ROLE_LABELS.get(m["role"], m["role"])} for m in built]

    voice = labelled(f"{system_prompt}\n\n{voice_instructions}")
    return {
        "preview_messages": labelled(system_prompt),
        # Only the system message differs for voice channels.
        "preview_voice_system": voice[0]["content"],
        "preview_history_window": history_window,
    }


def _preview_of(bot: Bot) -> dict[str, Any]:
    return _preview_messages(
        system_prompt=bot.system_prompt,
        voice_instructions=bot.voice_instructions,
        history_window=bot.history_window,
    )


@console_view()
def bot_list(request: HttpRequest) -> HttpResponse:
    channels = Q(connectors__kind__in=list(CONNECTOR_FORMS))
    bots = _bots(request).annotate(connector_count=Count("connectors", filter=channels))
    bots = bots.order_by("tenant__name", "name")
    return render(request, "console/bots/list.html", {"bots": bots})


@console_view(Role.ADMIN)
def bot_create(request: HttpRequest) -> HttpResponse:
    tenant = request.access.require_tenant()  # type: ignore[attr-defined]
    form = BotForm(_posted(request), tenant=tenant)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            with transaction.atomic():
                bot = services.bot_create(tenant=tenant, **{f: data[f] for f in _BOT_CREATE_ARGS})
                for field in form.Meta.fields:
                    setattr(bot, field, data[field])
                bot.save()
        except ValidationError as exc:
            # Another bot may have been created since the form checked the licence.
            add_model_errors(form, exc)
        else:
            messages.success(request, gettext("Bot “%(name)s” created.") % {"name": bot.name})
            return redirect("console:bot_detail", pk=bot.pk)
    return render(request, "console/bots/form.html", {"form": form, "bot": None})


@console_view()
def bot_detail(request: HttpRequest, pk: Any) -> HttpResponse:
    bot = _bot(request, pk)
    connectors = list(_connectors(request, bot))
    for connector in connectors:
        connector.kind_label = KIND_LABELS.get(connector.kind, connector.kind)  # type: ignore[attr-defined]
    context = {
        "bot": bot,
        "connectors": connectors,
        "kinds": list(KIND_LABELS.items()),
        **_preview_of(bot),
    }
    return render(request, "console/bots/detail.html", context)


@console_view(Role.ADMIN)
def bot_edit(request: HttpRequest, pk: Any) -> HttpResponse:
    bot = _bot(request, pk)
    form = BotForm(_posted(request), instance=bot, tenant=bot.tenant)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, gettext("Bot “%(name)s” saved.") % {"name": bot.name})
        return redirect("console:bot_detail", pk=bot.pk)
    return render(request, "console/bots/form.html", {"form": form, "bot": bot})


@require_POST
@console_view(Role.ADMIN)
def bot_set_active(request: HttpRequest, pk: Any) -> HttpResponse:
    bot = _bot(request, pk)
    bot.is_active = request.POST.get("active") == "1"
    # save() rather than update(): the audit log records the change.
    bot.save(update_fields=["is_active", "updated_at"])
    if bot.is_active:
        messages.success(request, gettext("Bot “%(name)s” activated.") % {"name": bot.name})
    else:
        messages.warning(
            request,
            gettext("Bot “%(name)s” deactivated: its connectors accept no messages.")
            % {"name": bot.name},
        )
    return redirect("console:bot_detail", pk=bot.pk)


@require_POST
@console_view(Role.ADMIN)
def bot_preview(request: HttpRequest) -> HttpResponse:
    """The htmx fragment under the prompt editor: the prompt as the model will see it."""
    form = PreviewForm(request.POST)
    form.is_valid()
    data = form.cleaned_data
    defaults = Bot()
    window = data.get("history_window")
    context = _preview_messages(
        system_prompt=data.get("system_prompt") or "",
        voice_instructions=data.get("voice_instructions") or defaults.voice_instructions,
        history_window=defaults.history_window if window is None else window,
    )
    return render(request, "console/bots/_preview.html", context)


@console_view(Role.ADMIN)
def connector_create(request: HttpRequest, bot_pk: Any, kind: str) -> HttpResponse:
    bot = _bot(request, bot_pk)
    form_class = CONNECTOR_FORMS.get(kind)
    if form_class is None:
        raise Http404("no such connector kind")
    is_operator = request.access.is_operator  # type: ignore[attr-defined]
    form = form_class(_posted(request), bot=bot, is_operator=is_operator)
    if request.method == "POST" and form.is_valid():
        try:
            with transaction.atomic():
                connector, reveals = _create_connector(request, form, bot)
        except ValidationError as exc:
            add_model_errors(form, exc)
        else:
            for label, value in reveals:
                _reveal(request, connector, label, value)
            messages.success(
                request, gettext("Connector “%(name)s” created.") % {"name": connector.name}
            )
            return redirect("console:connector_detail", bot_pk=bot.pk, pk=connector.pk)
    context = {"form": form, "bot": bot, "connector": None, "kind_label": KIND_LABELS[kind]}
    return render(request, "console/bots/connector_form.html", context)


def _create_connector(
    request: HttpRequest, form: ConnectorForm, bot: Bot
) -> tuple[Connector, list[tuple[str, str]]]:
    """Create through the bots services; returns the connector and what to show once."""
    data = form.cleaned_data
    reveals: list[tuple[str, str]] = []
    if form.kind == Connector.Kind.WEBHOOK:
        connector = services.connector_create_webhook(
            bot=bot,
            name=data["name"],
            callback_url=data.get("callback_url") or "",
            allow_private_callback=bool(data.get("allow_private_callback")),
        )
        if data["verification_profile"] != connector.verification_profile:
            connector.verification_profile = data["verification_profile"]
            connector.save(update_fields=["verification_profile"])
        reveals.append((gettext("Signing secret"), connector.secret))
    elif form.kind == Connector.Kind.DINGTALK:
        connector = services.connector_create_dingtalk(
            bot=bot,
            name=data["name"],
            app_key=data["app_key"],
            app_secret=data["app_secret"],
            robot_code=data.get("robot_code") or "",
            corp_id=data.get("corp_id") or "",
            mode=data["dingtalk_mode"],
        )
    else:
        connector = services.connector_create_aligenie(
            bot=bot,
            name=data["name"],
            skill_id=data.get("skill_id"),
            private_key=data.get("private_key") or "",
            voice_budget_ms=data["voice_budget_ms"],
            ownership_file_name=data.get("ownership_file_name") or "",
            ownership_file_content=data.get("ownership_file_content") or "",
        )
        reveals.append(
            (
                gettext("Webhook URL for the AliGenie console"),
                ingress_url(request, connector, with_token=True),
            )
        )
        if data.get("generate_key"):
            public = services.connector_generate_keypair(connector=connector)
            reveals.append((gettext("Public key for the AliGenie console"), public))
    return connector, reveals


@console_view()
def connector_detail(request: HttpRequest, bot_pk: Any, pk: Any) -> HttpResponse:
    bot = _bot(request, bot_pk)
    connector = _connector(request, bot, pk)
    public_key = ""
    if connector.kind == Connector.Kind.ALIGENIE and connector.private_key:
        try:
            public_key = public_key_pem(connector.private_key)
        except ValueError:
            public_key = ""
    context = {
        "bot": bot,
        "connector": connector,
        "kind_label": KIND_LABELS.get(connector.kind, connector.kind),
        "ingress_url": ingress_url(request, connector),
        "ownership_url": _ownership_url(request, connector),
        "public_key": public_key,
        "reveals": _take_reveals(request, connector),
        "rotatable": connector.kind in (Connector.Kind.WEBHOOK, Connector.Kind.ALIGENIE),
    }
    return render(request, "console/bots/connector_detail.html", context)


@console_view(Role.ADMIN)
def connector_edit(request: HttpRequest, bot_pk: Any, pk: Any) -> HttpResponse:
    bot = _bot(request, bot_pk)
    connector = _connector(request, bot, pk)
    form_class = CONNECTOR_FORMS[connector.kind]
    is_operator = request.access.is_operator  # type: ignore[attr-defined]
    form = form_class(_posted(request), instance=connector, bot=bot, is_operator=is_operator)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        with transaction.atomic():
            connector = form.save(commit=False)
            # Write-only fields: an empty box keeps what is stored.
            if data.get("app_secret"):
                connector.secret = data["app_secret"]
            if data.get("private_key"):
                connector.private_key = data["private_key"]
            connector.save()
            if data.get("generate_key"):
                public = services.connector_generate_keypair(connector=connector)
                _reveal(request, connector, gettext("Public key for the AliGenie console"), public)
        messages.success(request, gettext("Connector “%(name)s” saved.") % {"name": connector.name})
        return redirect("console:connector_detail", bot_pk=bot.pk, pk=connector.pk)
    context = {
        "form": form,
        "bot": bot,
        "connector": connector,
        "kind_label": KIND_LABELS.get(connector.kind, connector.kind),
    }
    return render(request, "console/bots/connector_form.html", context)


@require_POST
@console_view(Role.ADMIN)
def connector_rotate(request: HttpRequest, bot_pk: Any, pk: Any) -> HttpResponse:
    bot = _bot(request, bot_pk)
    connector = _connector(request, bot, pk)
    try:
        value = services.connector_rotate_secret(connector=connector)
    except ValueError:
        messages.error(
            request,
            gettext(
                "DingTalk secrets come from the DingTalk developer console: rotate it there, "
                "then paste the new one when editing the connector."
            ),
        )
    else:
        if connector.kind == Connector.Kind.ALIGENIE:
            _reveal(
                request,
                connector,
                gettext("New webhook URL for the AliGenie console"),
                ingress_url(request, connector, with_token=True),
            )
            messages.warning(
                request,
                gettext("The old URL no longer works: paste the new one into AliGenie now."),
            )
        else:
            _reveal(request, connector, gettext("New signing secret"), value)
            messages.warning(
                request,
                gettext("The old secret no longer works: update the tenant's system now."),
            )
    return redirect("console:connector_detail", bot_pk=bot.pk, pk=connector.pk)


@require_POST
@console_view(Role.ADMIN)
def connector_set_enabled(request: HttpRequest, bot_pk: Any, pk: Any) -> HttpResponse:
    bot = _bot(request, bot_pk)
    connector = _connector(request, bot, pk)
    connector.enabled = request.POST.get("enabled") == "1"
    fields = ["enabled"]
    if connector.enabled:
        # A connector disabled after repeated failures starts counting afresh.
        connector.consecutive_permanent_failures = 0
        fields.append("consecutive_permanent_failures")
    connector.save(update_fields=fields)
    if connector.enabled:
        messages.success(
            request, gettext("Connector “%(name)s” enabled.") % {"name": connector.name}
        )
    else:
        messages.warning(
            request, gettext("Connector “%(name)s” disabled.") % {"name": connector.name}
        )
    return redirect("console:connector_detail", bot_pk=bot.pk, pk=connector.pk)
