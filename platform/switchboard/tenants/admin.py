from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from connectors.webhook import generate_secret
from switchboard.tenants.models import Tenant


class TenantForm(forms.ModelForm):  # type: ignore[type-arg]
    alert_webhook_url = forms.URLField(
        required=False,
        max_length=1000,
        assume_scheme="https",
        help_text=Tenant._meta.get_field("alert_webhook_url").help_text,
    )
    # Write-only, like connector secrets: the stored one is never sent back to a browser.
    new_alert_webhook_secret = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        help_text="Signs alert webhooks (a whsec_ secret). Leave empty to keep the current "
        "one; with an alert webhook URL and no secret, one is generated and shown once.",
    )

    class Meta:
        model = Tenant
        # Listed rather than excluded, so a new secret column never appears by accident.
        fields = ["name", "slug", "is_active", "alert_webhook_url", "refusal_replies"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    form = TenantForm
    list_display = ["name", "slug", "is_active", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    fieldsets = [
        (None, {"fields": ["name", "slug", "is_active"]}),
        (
            "Licence alerts and refusal replies",
            {"fields": ["alert_webhook_url", "new_alert_webhook_secret", "refusal_replies"]},
        ),
    ]

    def save_model(self, request: HttpRequest, obj: Tenant, form: Any, change: bool) -> None:
        shown = ""
        if form.cleaned_data.get("new_alert_webhook_secret"):
            obj.alert_webhook_secret = form.cleaned_data["new_alert_webhook_secret"]
        elif obj.alert_webhook_url and not obj.alert_webhook_secret:
            obj.alert_webhook_secret = shown = generate_secret()
        super().save_model(request, obj, form, change)
        if shown:
            messages.add_message(
                request, messages.WARNING, f"Alert webhook secret (shown once): {shown}"
            )
