"""Who is asking, and what they may see: every console view goes through `console_view`.

Tenant users only ever see their own tenant's rows: views fetch through `Access.scope`
and `Access.get_or_404`, so another tenant's object is a 404 (its existence is not
revealed), never a 403. Operators see every tenant and pick one to look into.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.http import urlencode
from django_otp import user_has_device

from switchboard.console.models import Membership, Role
from switchboard.tenants.models import Tenant

M = TypeVar("M", bound=Model)
View = Callable[..., HttpResponse]

_RANK = {Role.VIEWER: 0, Role.ADMIN: 1, Role.OPERATOR: 2}
# The session key under which an operator's chosen tenant is kept.
TENANT_SESSION_KEY = "console_tenant"


@dataclass(frozen=True)
class Access:
    role: str
    # The tenant being looked at: the user's own, or the operator's pick (None: all).
    tenant: Tenant | None

    @property
    def is_operator(self) -> bool:
        return self.role == Role.OPERATOR

    @property
    def can_edit(self) -> bool:
        return self.role in (Role.ADMIN, Role.OPERATOR)

    def scope(self, queryset: QuerySet[M]) -> QuerySet[M]:
        """Rows of the tenant in view; an operator with no tenant picked sees all."""
        if self.tenant is None:
            if self.is_operator:
                return queryset
            return queryset.none()
        return queryset.filter(tenant_id=self.tenant.pk)

    def get_or_404(self, queryset: QuerySet[M], **lookup: Any) -> M:
        try:
            return self.scope(queryset).get(**lookup)
        except (queryset.model.DoesNotExist, ValueError, TypeError, ValidationError):
            raise Http404("not found") from None

    def require_tenant(self) -> Tenant:
        """The tenant in view, for pages that only make sense for one."""
        if self.tenant is None:
            raise Http404("pick a tenant first")
        return self.tenant


def access_for(request: HttpRequest) -> Access | None:
    user = request.user
    if not user.is_authenticated or not user.is_active:
        return None
    membership = Membership.objects.select_related("tenant").filter(user=user).first()
    if user.is_superuser or (membership and membership.role == Role.OPERATOR):
        tenant = None
        picked = request.session.get(TENANT_SESSION_KEY)
        if picked:
            tenant = Tenant.objects.filter(pk=picked).first()
        return Access(role=Role.OPERATOR, tenant=tenant)
    if membership is None or membership.tenant is None or not membership.tenant.is_active:
        return None
    return Access(role=membership.role, tenant=membership.tenant)


def console_view(role: str = Role.VIEWER) -> Callable[[View], View]:
    """Log in first; then at least `role`. The access lands on `request.access`."""
    needed = _RANK[Role(role)]

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            # A password alone does not open the console for a user who turned two-factor on.
            if user_has_device(request.user) and not request.user.is_verified():
                verify = reverse("console:otp_verify")
                return HttpResponseRedirect(
                    f"{verify}?{urlencode({'next': request.get_full_path()})}"
                )
            access = access_for(request)
            if access is None:
                raise PermissionDenied("this account has no console access")
            if _RANK[Role(access.role)] < needed:
                if needed == _RANK[Role.OPERATOR]:
                    # Operator pages do not exist for tenant users.
                    raise Http404("not found")
                raise PermissionDenied("your role may not do this")
            request.access = access  # type: ignore[attr-defined]
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


def console_context(request: HttpRequest) -> dict[str, Any]:
    """Template context for every page: who is looking, at what."""
    access = getattr(request, "access", None)
    if access is None:
        return {}
    context: dict[str, Any] = {"access": access}
    if access.is_operator:
        context["tenant_choices"] = list(Tenant.objects.order_by("name").values("pk", "name"))
    return context
