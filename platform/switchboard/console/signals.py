"""Apply each user's console language at login, and audit what the console changes."""

from __future__ import annotations

from typing import Any

from auditlog.registry import auditlog
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import translation

from switchboard.apikeys.models import ApiKey
from switchboard.bots.models import Bot, Connector
from switchboard.console.models import Membership
from switchboard.licensing.models import ModelLicence
from switchboard.pool.models import InferenceEndpoint
from switchboard.tenants.models import Tenant

LANGUAGE_SESSION_KEY = "console_language"

# Who changed what, when and from where (the middleware records the actor and address).
# Secrets are masked, never written into the log.
auditlog.register(Tenant, exclude_fields=["alert_webhook_secret"])
auditlog.register(Bot)
# Excluded, not masked: auditlog's masking keeps half of the value.
auditlog.register(Connector, exclude_fields=["secret", "private_key", "path_token"])
auditlog.register(InferenceEndpoint)
auditlog.register(ModelLicence)
auditlog.register(Membership)
auditlog.register(ApiKey, exclude_fields=["secret_hash", "last_used_at"])
auditlog.register(get_user_model(), include_fields=["username", "email", "is_active", "is_staff"])


@receiver(user_logged_in)
def apply_language(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if request is None:
        return
    membership = Membership.objects.filter(user=user).first()
    if membership is not None:
        request.session[LANGUAGE_SESSION_KEY] = membership.language
        translation.activate(membership.language)
