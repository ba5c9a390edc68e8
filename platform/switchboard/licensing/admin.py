from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone

from switchboard.licensing.documents import LicenceError, verify_signature_only
from switchboard.licensing.models import Licence, ModelLicence
from switchboard.licensing.services import licence_import

# A licence document is a few hundred bytes; anything far larger is not one.
_MAX_UPLOAD_BYTES = 64 * 1024


class LicenceImportForm(forms.Form):
    document = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 8, "cols": 100, "spellcheck": "false"}),
        help_text="Paste the licence document (the JSON text made by `issue_licence`).",
    )
    file = forms.FileField(required=False, help_text="Or upload the licence file.")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        upload = data.get("file")
        text = (data.get("document") or "").strip()
        if upload is not None:
            if upload.size > _MAX_UPLOAD_BYTES:
                raise forms.ValidationError("That file is too large to be a licence document.")
            try:
                text = upload.read().decode("utf-8").strip()
            except UnicodeDecodeError:
                raise forms.ValidationError("That file is not a text file.") from None
        if not text:
            raise forms.ValidationError("Paste a licence document or choose a licence file.")
        data["text"] = text
        return data


@admin.register(Licence)
class LicenceAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """The ledger, read-only: licences are imported, never edited or deleted."""

    list_display = [
        "tenant",
        "licence_id",
        "validity",
        "status",
        "mau_limit",
        "enforcement",
        "imported_at",
        "imported_by",
    ]
    list_filter = ["enforcement", "tenant"]
    search_fields = ["licence_id", "tenant__slug", "tenant__name", "imported_by"]
    date_hierarchy = "imported_at"
    readonly_fields = ["signature_check"]
    fields = [
        "tenant",
        "licence_id",
        "signature_check",
        "key_id",
        "issued_at",
        "valid_from",
        "valid_until",
        "mau_limit",
        "monthly_tokens",
        "tenant_messages_per_minute",
        "user_messages_per_minute",
        "connector_kinds",
        "max_bots",
        "enforcement",
        "imported_at",
        "imported_by",
        "document",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Licences come in through the import view, which checks the signature.
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_import_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("licensing.add_licence")

    @admin.display(description="valid")
    def validity(self, obj: Licence) -> str:
        return f"{obj.valid_from:%Y-%m-%d} – {obj.valid_until:%Y-%m-%d}"

    @admin.display(description="status")
    def status(self, obj: Licence) -> str:
        now = timezone.now()
        if now < obj.valid_from:
            return "not yet valid"
        if now >= obj.valid_until:
            return "expired"
        return "valid"

    @admin.display(description="signature")
    def signature_check(self, obj: Licence) -> str:
        # Checked again on every view: the stored document is the evidence, not the
        # columns copied from it.
        try:
            verify_signature_only(obj.document, settings.SWITCHBOARD_LICENCE_PUBLIC_KEYS)
        except LicenceError as exc:
            return f"NOT VERIFIED: {exc}"
        return f"verified (key {obj.key_id} is trusted by this installation)"

    def get_urls(self) -> list[URLPattern]:
        custom = [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="licensing_licence_import",
            )
        ]
        return custom + super().get_urls()

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = {**(extra_context or {}), "can_import": self.has_import_permission(request)}
        return super().changelist_view(request, extra_context)

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_import_permission(request):
            raise PermissionDenied
        posted = request.method == "POST"
        form = LicenceImportForm(request.POST, request.FILES) if posted else LicenceImportForm()
        if posted and form.is_valid():
            try:
                licence = licence_import(
                    text=form.cleaned_data["text"], imported_by=request.user.get_username()
                )
            except LicenceError as exc:
                form.add_error(None, f"Licence refused: {exc}")
            else:
                self.message_user(
                    request,
                    f"Imported licence {licence.licence_id} for {licence.tenant}, valid "
                    f"{licence.valid_from:%Y-%m-%d %H:%M} to {licence.valid_until:%Y-%m-%d %H:%M}"
                    " UTC.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:licensing_licence_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Import licence",
            "opts": self.model._meta,
            "form": form,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/licensing/licence/import.html", context)


@admin.register(ModelLicence)
class ModelLicenceAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["model_name", "licence_name", "mau_threshold", "mau_this_month", "terms_url"]
    search_fields = ["model_name", "licence_name"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def get_queryset(self, request: HttpRequest) -> Any:
        # The installation's MAU per model this month, in the same query as the list.
        from switchboard.metering.models import ModelMauCounter
        from switchboard.metering.selectors import month_start

        active = ModelMauCounter.objects.filter(
            model_name=models.OuterRef("model_name"), month=month_start()
        ).values("active")[:1]
        return super().get_queryset(request).annotate(mau=models.Subquery(active))

    @admin.display(description="MAU this month (installation)", ordering="mau")
    def mau_this_month(self, obj: ModelLicence) -> str:
        active = getattr(obj, "mau", None) or 0
        if not obj.mau_threshold:
            return f"{active:,}"
        return f"{active:,} ({100 * active / obj.mau_threshold:.2f} % of threshold)"
