"""Console forms for tenants, licences, bots and connectors.

Validation is the models' and services' own (licence limits live in `Bot.clean` and
`Connector.clean`, callback URLs go through the same SSRF check as the admin); these
forms add translated labels, write-only secrets, and the per-kind field sets.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django import forms
from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.utils.translation import gettext_lazy as _

from connectors.aligenie import load_private_key, validate_ownership_filename
from switchboard.bots.admin import WriteOnlyTextarea, callback_url_problem
from switchboard.bots.models import Bot, Connector, RoutingStrategy
from switchboard.tenants.models import Tenant

# A licence document is a few hundred bytes; anything far larger is not one.
LICENCE_MAX_UPLOAD_BYTES = 64 * 1024

# The models' choice labels are not translated; the console shows these instead.
KIND_LABELS: dict[str, Any] = {
    Connector.Kind.WEBHOOK: _("Signed webhook"),
    Connector.Kind.DINGTALK: _("DingTalk"),
    Connector.Kind.ALIGENIE: _("Tmall Genie (AliGenie)"),
}
ROUTING_CHOICES = [
    ("", _("Installation default")),
    (RoutingStrategy.SESSION_AFFINITY, _("Session affinity (KV-cache reuse, bounded load)")),
    (RoutingStrategy.LEAST_LOADED, _("Least loaded")),
    (RoutingStrategy.ROUND_ROBIN, _("Round robin")),
]
REPLY_FORMAT_CHOICES = [
    (Bot.ReplyFormat.TEXT, _("Plain text")),
    (Bot.ReplyFormat.MARKDOWN, _("Markdown")),
]
PROFILE_CHOICES = [
    (Connector.Profile.STANDARD, _("Standard Webhooks")),
    (Connector.Profile.STRIPE, _("Stripe-style (Stripe-Signature)")),
    (Connector.Profile.GITHUB, _("GitHub-style (X-Hub-Signature-256)")),
]
DINGTALK_MODE_CHOICES = [
    (Connector.DingTalkMode.HTTP, _("HTTP callback")),
    (Connector.DingTalkMode.STREAM, _("Stream (WebSocket)")),
]


def add_model_errors(form: forms.BaseForm, exc: ValidationError) -> None:
    """Put a model's or service's ValidationError on the form, field by field where the
    form has that field, so a refusal is a form error rather than a 500."""
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc)
        return
    for field, errors in exc.message_dict.items():
        target = field if field in form.fields and field != NON_FIELD_ERRORS else None
        for message in errors:
            form.add_error(target, message)


class TenantForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = Tenant
        fields = ["name", "slug"]
        labels = {"name": _("Name"), "slug": _("Slug")}
        help_texts = {
            "slug": _(
                "Short identifier used in licence files (letters, digits, '-' and '_'); "
                "it cannot be changed here later."
            )
        }


class LicenceImportForm(forms.Form):
    document = forms.CharField(
        label=_("Licence document"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false"}),
        help_text=_("Paste the licence document (the JSON text made by `issue_licence`)."),
    )
    file = forms.FileField(
        label=_("Licence file"), required=False, help_text=_("Or upload the licence file.")
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        upload = data.get("file")
        text = str(data.get("document") or "").strip()
        if upload is not None:
            if upload.size > LICENCE_MAX_UPLOAD_BYTES:
                raise ValidationError(_("That file is too large to be a licence document."))
            try:
                text = upload.read().decode("utf-8").strip()
            except UnicodeDecodeError:
                raise ValidationError(_("That file is not a text file.")) from None
        if not text:
            raise ValidationError(_("Paste a licence document or choose a licence file."))
        data["text"] = text
        return data


class BotForm(forms.ModelForm):  # type: ignore[type-arg]
    """Everything about a bot but its tenant and whether it is active."""

    routing_strategy = forms.ChoiceField(
        label=_("Routing strategy"),
        choices=ROUTING_CHOICES,
        required=False,
        help_text=_("How this bot's requests pick a GPU server."),
    )
    reply_format = forms.ChoiceField(
        label=_("Reply format"),
        choices=REPLY_FORMAT_CHOICES,
        help_text=_("How replies are sent where the channel offers a choice (DingTalk)."),
    )

    # (section title, field names): the edit page groups the fields this way.
    SECTIONS: ClassVar[list[tuple[Any, list[str]]]] = [
        (_("Bot"), ["name", "system_prompt"]),
        (
            _("Model"),
            ["model_name", "temperature", "max_tokens", "history_window", "routing_strategy"],
        ),
        (_("Replies"), ["language", "reply_format", "unsupported_message_reply"]),
        (
            _("Voice (Tmall Genie)"),
            ["voice_instructions", "voice_max_chars", "voice_pending_reply"],
        ),
    ]

    class Meta:
        model = Bot
        fields = [
            "name",
            "system_prompt",
            "model_name",
            "temperature",
            "max_tokens",
            "history_window",
            "routing_strategy",
            "language",
            "reply_format",
            "unsupported_message_reply",
            "voice_instructions",
            "voice_max_chars",
            "voice_pending_reply",
        ]
        labels = {
            "name": _("Name"),
            "system_prompt": _("System prompt"),
            "model_name": _("Model"),
            "temperature": _("Temperature"),
            "max_tokens": _("Max tokens per reply"),
            "history_window": _("History window"),
            "language": _("Language of platform replies"),
            "unsupported_message_reply": _("Reply to unsupported messages"),
            "voice_instructions": _("Voice instructions"),
            "voice_max_chars": _("Longest spoken answer (characters)"),
            "voice_pending_reply": _("Reply while the answer is not ready"),
        }
        help_texts = {
            "system_prompt": _("What the model is told before every conversation."),
            "temperature": _("0 to 2; lower is more predictable."),
            "max_tokens": _("1 to 32768."),
            "history_window": _(
                "How many earlier messages of the conversation go into the prompt (0 to 200)."
            ),
            "language": _("The language of the platform's own replies (refusals, slow down)."),
            "unsupported_message_reply": _(
                "Sent when someone sends a picture, video, file or other message the bot "
                "cannot read."
            ),
            "voice_instructions": _("Added to the system prompt for voice channels (Tmall Genie)."),
            "voice_max_chars": _("Spoken answers are cut at a sentence boundary within this."),
            "voice_pending_reply": _(
                "Spoken when the answer is not ready in time; the answer is kept for the next "
                "turn of the same session."
            ),
        }
        widgets = {
            "system_prompt": forms.Textarea(attrs={"rows": 12, "spellcheck": "false"}),
            "unsupported_message_reply": forms.Textarea(attrs={"rows": 2}),
            "voice_instructions": forms.Textarea(attrs={"rows": 3}),
            "voice_pending_reply": forms.Textarea(attrs={"rows": 2}),
        }

    def __init__(self, *args: Any, tenant: Tenant, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tenant = tenant
        if self.instance._state.adding:
            # Bot.clean() needs the tenant to check the licence's max_bots.
            self.instance.tenant = tenant

    @property
    def sections(self) -> list[tuple[Any, list[forms.BoundField]]]:
        return [(title, [self[name] for name in names]) for title, names in self.SECTIONS]

    def clean_name(self) -> str:
        name = str(self.cleaned_data.get("name") or "").strip()
        # The unique constraint includes the tenant, which is not a form field, so the
        # form would not check it; without this a duplicate is an IntegrityError.
        taken = Bot.objects.for_tenant(self.tenant).filter(name=name)
        if self.instance.pk is not None:
            taken = taken.exclude(pk=self.instance.pk)
        if taken.exists():
            raise ValidationError(_("This tenant already has a bot with this name."))
        return name


class PreviewForm(forms.Form):
    """The bot fields the prompt preview reads; anything missing or invalid falls back to
    the defaults, so the preview renders while the editor is half filled in."""

    system_prompt = forms.CharField(required=False, strip=False)
    voice_instructions = forms.CharField(required=False, strip=False)
    history_window = forms.IntegerField(required=False, min_value=0, max_value=200)


class ConnectorForm(forms.ModelForm):  # type: ignore[type-arg]
    """Fields one connector kind needs. Creation goes through the bots services; edits
    save the form. Secrets are write-only: typed in, never rendered back."""

    kind: ClassVar[str]

    def __init__(self, *args: Any, bot: Bot, is_operator: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bot = bot
        self.is_operator = is_operator
        if self.instance._state.adding:
            # Connector.clean() checks the licence's connector kinds for new connectors.
            self.instance.tenant_id = bot.tenant_id
            self.instance.bot = bot
            self.instance.kind = self.kind

    @property
    def adding(self) -> bool:
        return bool(self.instance._state.adding)


class WebhookConnectorForm(ConnectorForm):
    kind = Connector.Kind.WEBHOOK

    callback_url = forms.URLField(
        label=_("Callback URL"),
        required=False,
        max_length=1000,
        assume_scheme="https",
        help_text=_("Where replies are POSTed, signed with the connector's secret."),
    )
    verification_profile = forms.ChoiceField(
        label=_("Verification profile"),
        choices=PROFILE_CHOICES,
        help_text=_("Which signature headers the tenant's system sends and expects."),
    )

    class Meta:
        model = Connector
        fields = ["name", "callback_url", "verification_profile", "allow_private_callback"]
        labels = {
            "name": _("Name"),
            "allow_private_callback": _("Allow a private callback address"),
        }
        help_texts = {
            "allow_private_callback": _(
                "Operator only: allow a callback URL on a loopback or private network."
            )
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_operator:
            # A disabled field ignores what is posted and keeps the stored value.
            self.fields["allow_private_callback"].disabled = True

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        url = data.get("callback_url")
        if url:
            allow = (
                bool(data.get("allow_private_callback"))
                or bool(self.instance.pk and self.instance.allow_private_callback)
                or settings.SWITCHBOARD_ALLOW_PRIVATE_CALLBACKS
            )
            problem = callback_url_problem(url, allow_private=allow)
            if problem:
                self.add_error("callback_url", problem)
        return data


class DingTalkConnectorForm(ConnectorForm):
    kind = Connector.Kind.DINGTALK

    app_secret = forms.CharField(
        label=_("App secret (Client Secret)"),
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
    )
    dingtalk_mode = forms.ChoiceField(
        label=_("Mode"),
        choices=DINGTALK_MODE_CHOICES,
        help_text=_(
            "HTTP: DingTalk posts to the ingress URL below. Stream: the platform connects "
            "out to DingTalk (no public URL needed)."
        ),
    )

    class Meta:
        model = Connector
        fields = ["name", "app_key", "app_secret", "robot_code", "corp_id", "dingtalk_mode"]
        labels = {
            "name": _("Name"),
            "app_key": _("App key (Client ID)"),
            "robot_code": _("Robot code"),
            "corp_id": _("Corp ID"),
        }
        help_texts = {
            "robot_code": _("Needed to send replies through the DingTalk OpenAPI."),
            "corp_id": _("If set, inbound messages must come from this organisation."),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["app_key"].required = True
        self.fields["app_secret"].required = self.adding
        self.fields["app_secret"].help_text = (
            _("From the DingTalk developer console.")
            if self.adding
            else _("Leave empty to keep the current secret; paste a new one after rotating it.")
        )


class AliGenieConnectorForm(ConnectorForm):
    kind = Connector.Kind.ALIGENIE

    private_key = forms.CharField(
        label=_("RSA private key"),
        required=False,
        widget=WriteOnlyTextarea(attrs={"rows": 4, "spellcheck": "false"}),
    )
    generate_key = forms.BooleanField(
        label=_("Generate a new key pair"),
        required=False,
        help_text=_("The public key to paste into the AliGenie console is shown once."),
    )
    # The key is not in Meta.fields, so the form never loads it into the page nor
    # overwrites the stored one with an empty value.
    field_order = [
        "name",
        "skill_id",
        "voice_budget_ms",
        "private_key",
        "generate_key",
        "ownership_file_name",
        "ownership_file_content",
    ]

    class Meta:
        model = Connector
        fields = [
            "name",
            "skill_id",
            "voice_budget_ms",
            "ownership_file_name",
            "ownership_file_content",
        ]
        labels = {
            "name": _("Name"),
            "skill_id": _("Skill ID"),
            "voice_budget_ms": _("Voice budget (ms)"),
            "ownership_file_name": _("Ownership file name"),
            "ownership_file_content": _("Ownership file content"),
        }
        help_texts = {
            "skill_id": _("If set, requests for any other skill are refused."),
            "voice_budget_ms": _("How long a speaker may wait for the answer."),
            "ownership_file_name": _(
                "The file AliGenie asks for to prove you own the URL, e.g. abc123.txt."
            ),
        }
        widgets = {"ownership_file_content": forms.Textarea(attrs={"rows": 2})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["private_key"].help_text = (
            _("PEM RSA key for encrypted (securityQuery) requests; optional.")
            if self.adding
            else _("Leave empty to keep the current key.")
        )

    def clean_private_key(self) -> str:
        pem = str(self.cleaned_data.get("private_key") or "").strip()
        if pem:
            try:
                load_private_key(pem)
            except ValueError as exc:
                raise ValidationError(
                    _("Not a usable RSA private key: %(reason)s"), params={"reason": exc}
                ) from None
        return pem

    def clean_ownership_file_name(self) -> str:
        name = str(self.cleaned_data.get("ownership_file_name") or "").strip()
        if name:
            try:
                validate_ownership_filename(name)
            except ValueError:
                raise ValidationError(
                    _("Letters, digits, '_' or '-' followed by '.txt' (at most 124 characters).")
                ) from None
        return name

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("private_key") and data.get("generate_key"):
            self.add_error("generate_key", _("Paste a private key or generate one, not both."))
        return data


CONNECTOR_FORMS: dict[str, type[ConnectorForm]] = {
    form.kind: form for form in (WebhookConnectorForm, DingTalkConnectorForm, AliGenieConnectorForm)
}
