from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from connectors.aligenie import load_private_key
from connectors.netguard import UnsafeURL, check_url
from connectors.webhook import generate_secret
from switchboard.bots import services
from switchboard.bots.models import Bot, Connector

_URL_FIELDS = {models.URLField: {"assume_scheme": "https"}}


class ConnectorInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Connector
    extra = 0
    fields = ["name", "kind", "enabled", "last_error"]
    readonly_fields = ["name", "kind", "last_error"]
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Bot)
class BotAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["name", "tenant", "model_name", "routing_strategy", "reply_format", "is_active"]
    list_filter = ["is_active", "model_name", "tenant"]
    search_fields = ["name", "tenant__name"]
    inlines = [ConnectorInline]
    fieldsets = [
        (None, {"fields": ["tenant", "name", "is_active"]}),
        (
            "Model",
            {
                "fields": [
                    "system_prompt",
                    "model_name",
                    "temperature",
                    "max_tokens",
                    "history_window",
                    "routing_strategy",
                ]
            },
        ),
        ("Channels", {"fields": ["reply_format", "unsupported_message_reply"]}),
        (
            "Voice (Tmall Genie)",
            {"fields": ["voice_instructions", "voice_max_chars", "voice_pending_reply"]},
        ),
    ]


class WriteOnlyTextarea(forms.Textarea):
    """A textarea that never renders a value back, even the one just typed."""

    def format_value(self, value: Any) -> str | None:
        return None


class ConnectorForm(forms.ModelForm):  # type: ignore[type-arg]
    """Secrets are write-only: typed in, never rendered back into the page."""

    callback_url = forms.URLField(required=False, max_length=1000, assume_scheme="https")
    new_secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="DingTalk: the app's Client Secret. Webhook: leave empty to generate one "
        "(shown once after saving). Leave empty to keep the current one.",
    )
    new_private_key = forms.CharField(
        required=False,
        widget=WriteOnlyTextarea(attrs={"rows": 4}),
        help_text="AliGenie: PEM RSA private key for encrypted requests, or use the "
        "'Generate AliGenie key pair' action. Leave empty to keep the current one.",
    )

    class Meta:
        model = Connector
        # Listed rather than excluded, so a new secret column never appears by accident.
        fields = [
            "tenant",
            "bot",
            "kind",
            "name",
            "enabled",
            "callback_url",
            "verification_profile",
            "allow_private_callback",
            "dingtalk_mode",
            "app_key",
            "robot_code",
            "corp_id",
            "skill_id",
            "voice_budget_ms",
            "ownership_file_name",
            "ownership_file_content",
        ]

    def clean_new_private_key(self) -> str:
        pem = str(self.cleaned_data.get("new_private_key") or "").strip()
        if pem:
            try:
                load_private_key(pem)
            except ValueError as exc:
                raise forms.ValidationError(f"not a usable RSA private key: {exc}") from exc
        return pem

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("kind") == Connector.Kind.DINGTALK and not (
            data.get("new_secret") or (self.instance.pk and self.instance.secret)
        ):
            self.add_error("new_secret", "DingTalk connectors need the app's Client Secret.")
        bot = data.get("bot")
        tenant = data.get("tenant")
        if bot is not None and tenant is not None and bot.tenant_id != tenant.pk:
            self.add_error("bot", "The bot belongs to another tenant.")
        url = data.get("callback_url")
        if url and data.get("kind") == Connector.Kind.WEBHOOK:
            # The stored flag counts too: only operators may change it (see save_model).
            allow = (
                bool(data.get("allow_private_callback"))
                or bool(self.instance.pk and self.instance.allow_private_callback)
                or settings.SWITCHBOARD_ALLOW_PRIVATE_CALLBACKS
            )
            problem = callback_url_problem(url, allow_private=allow)
            if problem:
                self.add_error("callback_url", problem)
        return data


def callback_url_problem(url: str, *, allow_private: bool) -> str | None:
    """Why a callback URL would be refused when sending, if that can be told now.

    A host that does not resolve yet is accepted (DNS may be split or not set up yet);
    the guard on every connection is what finally decides.
    """
    try:
        check_url(url, allow_private=allow_private)
    except UnsafeURL as exc:
        host = urlsplit(url).hostname or ""
        try:
            socket.getaddrinfo(host, None)
        except (OSError, UnicodeError):
            return None if host else str(exc)
        return str(exc)
    return None


@admin.register(Connector)
class ConnectorAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    form = ConnectorForm
    list_display = [
        "name",
        "kind",
        "bot",
        "tenant",
        "enabled",
        "consecutive_permanent_failures",
        "last_error_at",
    ]
    list_filter = ["kind", "enabled", "dingtalk_mode"]
    search_fields = ["name", "bot__name", "tenant__name"]
    readonly_fields = [
        "id",
        "ingress_url",
        "consecutive_permanent_failures",
        "last_error",
        "last_error_at",
        "created_at",
    ]
    fieldsets = [
        (
            None,
            {"fields": ["tenant", "bot", "kind", "name", "enabled", "ingress_url", "new_secret"]},
        ),
        (
            "Signed webhook",
            {"fields": ["callback_url", "verification_profile", "allow_private_callback"]},
        ),
        ("DingTalk", {"fields": ["dingtalk_mode", "app_key", "robot_code", "corp_id"]}),
        (
            "Tmall Genie (AliGenie)",
            {
                "fields": [
                    "skill_id",
                    "voice_budget_ms",
                    "new_private_key",
                    "ownership_file_name",
                    "ownership_file_content",
                ]
            },
        ),
        (
            "Status",
            {
                "fields": [
                    "id",
                    "consecutive_permanent_failures",
                    "last_error",
                    "last_error_at",
                    "created_at",
                ]
            },
        ),
    ]
    actions = ["rotate_secret", "generate_keypair", "enable", "disable"]
    formfield_overrides = _URL_FIELDS

    @admin.display(description="URL to paste into the provider's console")
    def ingress_url(self, obj: Connector) -> str:
        # The id is a UUID default, so an unsaved connector has one too, but not the one
        # it will be saved with: show nothing until it exists.
        if obj is None or obj._state.adding:
            return ""
        path = services.connector_ingress_path(obj)
        if not path:
            return "— (Stream mode connects out; run `manage.py dingtalk_stream`)"
        return format_html("<code>{}</code>", path)

    def get_form(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, **kwargs)
        if not request.user.is_superuser and "allow_private_callback" in form.base_fields:
            # Operators only: a disabled field ignores whatever is posted for it, so the
            # form's own checks see the stored value.
            form.base_fields["allow_private_callback"].disabled = True
        return form

    def save_model(self, request: HttpRequest, obj: Connector, form: Any, change: bool) -> None:
        shown: str | None = None
        if form.cleaned_data.get("new_secret"):
            obj.secret = form.cleaned_data["new_secret"]
        elif obj.kind == Connector.Kind.WEBHOOK and not obj.secret:
            obj.secret = shown = generate_secret()
        if form.cleaned_data.get("new_private_key"):
            obj.private_key = form.cleaned_data["new_private_key"]
        if obj.kind == Connector.Kind.ALIGENIE and not obj.path_token:
            obj.path_token = services.new_path_token()
        super().save_model(request, obj, form, change)
        if shown:
            self.message_user(
                request, f"Signing secret (shown once, copy it now): {shown}", messages.WARNING
            )

    @admin.action(description="Rotate secret (webhook secret or AliGenie URL token)")
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[Connector]) -> None:
        for connector in queryset:
            try:
                value = services.connector_rotate_secret(connector=connector)
            except ValueError as exc:
                self.message_user(request, f"{connector}: {exc}", messages.ERROR)
                continue
            label = "new URL" if connector.kind == Connector.Kind.ALIGENIE else "new secret"
            shown = services.connector_ingress_path(connector) if label == "new URL" else value
            self.message_user(
                request, f"{connector}: {label} (shown once): {shown}", messages.WARNING
            )

    @admin.action(description="Generate AliGenie key pair (shows the public key)")
    def generate_keypair(self, request: HttpRequest, queryset: QuerySet[Connector]) -> None:
        for connector in queryset.filter(kind=Connector.Kind.ALIGENIE):
            public = services.connector_generate_keypair(connector=connector)
            self.message_user(
                request,
                f"{connector}: paste this public key into the AliGenie console: {public}",
                messages.WARNING,
            )

    @admin.action(description="Enable (and reset the failure count)")
    def enable(self, request: HttpRequest, queryset: QuerySet[Connector]) -> None:
        count = queryset.update(enabled=True, consecutive_permanent_failures=0)
        self.message_user(request, f"{count} connector(s) enabled.")

    @admin.action(description="Disable")
    def disable(self, request: HttpRequest, queryset: QuerySet[Connector]) -> None:
        count = queryset.update(enabled=False)
        self.message_user(request, f"{count} connector(s) disabled.")
