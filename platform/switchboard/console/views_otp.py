"""Two-factor sign-in: an authenticator app (TOTP) on top of the password, per user, optional.

`access.console_view` does the enforcing: a user with a confirmed device whose session is
not yet verified is sent to `otp_verify`. The pages here turn the device on and off.
Wrong codes are throttled by django-otp on the device itself (exponential back-off).
"""

from __future__ import annotations

from base64 import b32encode
from typing import Any
from urllib.parse import urlsplit

import django_otp
import segno
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST
from django_otp.models import VerifyNotAllowed
from django_otp.plugins.otp_totp.models import TOTPDevice

from switchboard.console.access import console_view


def _confirmed_device(user: Any) -> TOTPDevice | None:
    # The console makes at most one; the oldest wins should an admin have added more.
    return TOTPDevice.objects.devices_for_user(user, confirmed=True).order_by("pk").first()


def _pending_device(user: Any) -> TOTPDevice | None:
    return TOTPDevice.objects.devices_for_user(user, confirmed=False).order_by("-pk").first()


def _throttled_message(extra: dict[str, Any] | None) -> str:
    # django-otp's own wording, repeated here so that it reaches our catalogue.
    if extra and extra.get("reason") == VerifyNotAllowed.N_FAILED_ATTEMPTS:
        count = int(extra.get("failure_count", 0))
        return ngettext(
            "Verification temporarily disabled because of %(failure_count)d failed attempt, "
            "please try again soon.",
            "Verification temporarily disabled because of %(failure_count)d failed attempts, "
            "please try again soon.",
            count,
        ) % {"failure_count": count}
    return _("Verification of the token is currently disabled")


def _verify(
    request: HttpRequest, device: TOTPDevice, raw: str
) -> tuple[TOTPDevice | None, str | None]:
    """The device, reloaded, when `raw` is a current code for it; else the error to show."""
    allowed, extra = device.verify_is_allowed()
    if not allowed:
        return None, _throttled_message(extra)
    # Apps show the code as "123 456"; people type it that way too.
    token = "".join(raw.split())
    if not (token.isdigit() and len(token) == device.digits):
        return None, _("Enter the %(digits)s-digit code from your authenticator app.") % {
            "digits": device.digits
        }
    # Locks the row, so one code cannot be used twice by concurrent requests, checks the
    # owner, and counts the failure towards the throttle.
    verified = django_otp.verify_token(request.user, device.persistent_id, token)
    if verified is None:
        return None, _("That code is not right. Enter the code your app shows now.")
    return verified, None


def _qr_svg(uri: str) -> str:
    # segno draws from the URI alone (no text from it ends up in the markup), so the SVG
    # is safe to inline; a white background keeps it scannable on a dark screen.
    svg = segno.make(uri, error="m").svg_inline(scale=4, border=2, light="#fff")
    return mark_safe(svg)  # noqa: S308


def _settings_page(request: HttpRequest, *, error: str | None = None) -> HttpResponse:
    user = request.user
    device = _confirmed_device(user)
    pending = None if device is not None else _pending_device(user)
    context: dict[str, Any] = {"enabled": device is not None, "pending": pending, "error": error}
    if pending is not None:
        context["qr_svg"] = _qr_svg(pending.config_url)
        context["secret"] = b32encode(pending.bin_key).decode()
        context["digits"] = pending.digits
    elif device is not None:
        context["digits"] = device.digits
    return render(request, "console/otp/settings.html", context)


@never_cache  # The page can show the secret.
@console_view()
def otp_settings(request: HttpRequest) -> HttpResponse:
    return _settings_page(request)


@require_POST
@console_view()
def otp_enable(request: HttpRequest) -> HttpResponse:
    """Start setting up: a new, unconfirmed device whose secret the next page shows."""
    user = request.user
    with transaction.atomic():
        if _confirmed_device(user) is None:
            # A fresh secret each time: one shown for an abandoned attempt may have been seen.
            TOTPDevice.objects.devices_for_user(user, confirmed=False).delete()
            TOTPDevice.objects.create(user=user, name="console", confirmed=False)
    return redirect("console:otp")


@require_POST
@console_view()
def otp_cancel(request: HttpRequest) -> HttpResponse:
    TOTPDevice.objects.devices_for_user(request.user, confirmed=False).delete()
    return redirect("console:otp")


@require_POST
@console_view()
def otp_confirm(request: HttpRequest) -> HttpResponse:
    """A correct code from the app proves it holds the secret: two-factor is on from now."""
    user = request.user
    pending = _pending_device(user)
    if pending is None or _confirmed_device(user) is not None:
        return redirect("console:otp")
    device, error = _verify(request, pending, request.POST.get("token", ""))
    if device is None:
        return _settings_page(request, error=error)
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    # The user just proved the second factor, so this session need not ask again.
    django_otp.login(request, device)
    messages.success(request, _("Two-factor sign-in is on."))
    return redirect("console:otp")


@require_POST
@console_view()
def otp_disable(request: HttpRequest) -> HttpResponse:
    """Turning it off takes a current code, so a session left open cannot do it alone."""
    user = request.user
    device = _confirmed_device(user)
    if device is None:
        return redirect("console:otp")
    verified, error = _verify(request, device, request.POST.get("token", ""))
    if verified is None:
        return _settings_page(request, error=error)
    for each in list(django_otp.devices_for_user(user, confirmed=None)):
        each.delete()
    request.session.pop(django_otp.DEVICE_ID_SESSION_KEY, None)
    messages.success(request, _("Two-factor sign-in is off."))
    return redirect("console:otp")


def _next(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    safe = url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    # Coming back here once verified would only bounce on to `next` again.
    if not safe or urlsplit(target).path == reverse("console:otp_verify"):
        return reverse("console:overview")
    return target


@never_cache
@require_http_methods(["GET", "POST"])
def otp_verify(request: HttpRequest) -> HttpResponse:
    """The second step of signing in, for users who turned two-factor on.

    Not a `console_view`: that would send the unverified user straight back here."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    target = _next(request)
    device = _confirmed_device(request.user)
    if device is None or request.user.is_verified():
        return HttpResponseRedirect(target)
    error = None
    if request.method == "POST":
        verified, error = _verify(request, device, request.POST.get("token", ""))
        if verified is not None:
            django_otp.login(request, verified)
            return HttpResponseRedirect(target)
    context = {"next": target, "error": error, "digits": device.digits}
    return render(request, "console/otp/verify.html", context)
