"""The Django admin, with the console's second factor: a user who turned on two-factor
sign-in must verify it before the admin opens (the admin's own login asks only for the
password)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig as DjangoAdminConfig
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django_otp import user_has_device


def _needs_second_factor(request: HttpRequest) -> bool:
    user = request.user
    return bool(user.is_authenticated and user_has_device(user) and not user.is_verified())


class AdminSite(admin.AdminSite):
    def has_permission(self, request: HttpRequest) -> bool:
        return super().has_permission(request) and not _needs_second_factor(request)

    def login(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        if _needs_second_factor(request):
            target = request.GET.get("next") or reverse("admin:index")
            verify = reverse("console:otp_verify")
            return HttpResponseRedirect(f"{verify}?{urlencode({'next': target})}")
        return super().login(request, extra_context)


class AdminConfig(DjangoAdminConfig):
    default_site = "switchboard.console.admin_site.AdminSite"
