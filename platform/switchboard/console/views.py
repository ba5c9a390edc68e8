"""Console pages shared by everyone: sign-in, language, tenant pick, overview shell.
Each area's pages live in their own `views_<area>.py`."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.urls import reverse, reverse_lazy
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from switchboard.console.access import TENANT_SESSION_KEY, console_view
from switchboard.console.models import Membership, Role
from switchboard.console.signals import LANGUAGE_SESSION_KEY
from switchboard.tenants.models import Tenant


class LoginView(auth_views.LoginView):
    template_name = "console/login.html"
    redirect_authenticated_user = True


class PasswordChangeView(auth_views.PasswordChangeView):
    template_name = "console/password_change.html"
    success_url = reverse_lazy("console:password_change_done")


class PasswordChangeDoneView(auth_views.PasswordChangeDoneView):
    template_name = "console/password_change_done.html"


def _back(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.META.get("HTTP_REFERER") or ""
    if url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return reverse("console:overview")


@require_POST
def set_language(request: HttpRequest) -> HttpResponse:
    """Switch the console's language; a signed-in user keeps the choice for next time."""
    language = request.POST.get("language", "")
    if language not in dict(settings.LANGUAGES):
        return redirect(_back(request))
    request.session[LANGUAGE_SESSION_KEY] = language
    if request.user.is_authenticated:
        Membership.objects.filter(user=request.user).update(language=language)
    response = HttpResponseRedirect(_back(request))
    response.set_cookie(settings.LANGUAGE_COOKIE_NAME, language, samesite="Lax")
    return response


@require_POST
@console_view(Role.OPERATOR)
def pick_tenant(request: HttpRequest) -> HttpResponse:
    """Operators look into one tenant at a time (empty: all tenants)."""
    picked = request.POST.get("tenant", "")
    tenant = Tenant.objects.filter(pk=picked).first() if picked else None
    if tenant is None:
        request.session.pop(TENANT_SESSION_KEY, None)
    else:
        request.session[TENANT_SESSION_KEY] = str(tenant.pk)
    return redirect(_back(request))
