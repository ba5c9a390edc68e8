"""API-key authentication, scopes and per-key throttling for the REST API."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from switchboard.apikeys.models import ApiKey, Scope
from switchboard.apikeys.services import api_key_authenticate


class KeyPrincipal:
    """`request.user` for a request made with an API key: the key acts for its tenant."""

    is_authenticated = True
    is_anonymous = False
    is_active = True

    def __init__(self, key: ApiKey) -> None:
        self.key = key
        self.pk = key.pk
        self.tenant_id = key.tenant_id

    def __str__(self) -> str:
        return f"API key {self.key.prefix}"


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[KeyPrincipal, ApiKey] | None:
        header = get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise exceptions.AuthenticationFailed(
                "Send the tenant's API key as `Authorization: Bearer sb_…`.",
                code="invalid_authorization",
            )
        key = api_key_authenticate(token.strip())
        if key is None:
            raise exceptions.AuthenticationFailed(
                "The API key is unknown, revoked or expired.", code="invalid_api_key"
            )
        return KeyPrincipal(key), key

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (not 403) to a request without credentials.
        return 'Bearer realm="switchboard"'


def required_scope(request: Request, view: Any) -> str:
    """The scope a request needs: the view's own say for its action, else read for
    reads and write for everything else."""
    action = getattr(view, "action", None)
    scopes: dict[str, str] = getattr(view, "action_scopes", {})
    if action in scopes:
        return scopes[action]
    return Scope.READ if request.method in SAFE_METHODS else Scope.WRITE


class HasScope(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        key = request.auth
        if not isinstance(key, ApiKey):
            return False
        scope = required_scope(request, view)
        if not key.has_scope(scope):
            raise exceptions.PermissionDenied(
                f"This API key lacks the `{scope}` scope.", code="insufficient_scope"
            )
        return True


class ApiKeyThrottle(SimpleRateThrottle):
    scope = "api_key"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        key = request.auth
        ident = key.pk if isinstance(key, ApiKey) else self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}
