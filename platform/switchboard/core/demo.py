"""The demo installation that `manage.py up` seeds: one tenant, bot, webhook connector."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction

from switchboard import embedded
from switchboard.bots.models import Bot, Connector
from switchboard.bots.services import bot_create, connector_create_webhook
from switchboard.pool.models import InferenceEndpoint
from switchboard.tenants.models import Tenant

DEMO_TENANT_SLUG = "demo"
DEMO_BOT_NAME = "Demo assistant"
DEMO_CONNECTOR_NAME = "Demo webhook"
DEMO_CALLBACK_URL = "http://127.0.0.1:8099/callback"
ADMIN_USERNAME = "admin"


@dataclass(frozen=True)
class DemoInstallation:
    tenant: Tenant
    bot: Bot
    connector: Connector
    admin_username: str
    admin_password: str | None  # None when the admin user existed and was not ours


def _admin_password() -> str:
    path = embedded.var_dir() / "admin_password"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(12))
        path.chmod(0o600)
    return path.read_text().strip()


@transaction.atomic
def demo_seed(
    *, endpoint_urls: list[str], callback_url: str = DEMO_CALLBACK_URL
) -> DemoInstallation:
    """Create what is missing; running it again changes nothing that exists."""
    tenant, _ = Tenant.objects.get_or_create(slug=DEMO_TENANT_SLUG, defaults={"name": "Demo Co"})
    bot = Bot.objects.for_tenant(tenant).filter(name=DEMO_BOT_NAME).first() or bot_create(
        tenant=tenant,
        name=DEMO_BOT_NAME,
        system_prompt="You are Switchboard's demo assistant. Answer briefly and politely.",
    )
    connector = Connector.objects.for_tenant(tenant).filter(
        bot=bot, name=DEMO_CONNECTOR_NAME
    ).first() or connector_create_webhook(
        bot=bot,
        name=DEMO_CONNECTOR_NAME,
        callback_url=callback_url,
        # The demo's receiver (`dev.py send`) listens on loopback; the operator running
        # the demo allows that for this connector only.
        allow_private_callback=True,
    )
    if not connector.allow_private_callback:
        Connector.objects.filter(pk=connector.pk).update(allow_private_callback=True)
    for index, url in enumerate(endpoint_urls, start=1):
        InferenceEndpoint.objects.update_or_create(
            name=f"sim-{index}", defaults={"url": url, "enabled": True}
        )
    user_model = get_user_model()
    password: str | None = None
    if not user_model.objects.filter(username=ADMIN_USERNAME).exists():
        password = _admin_password()
        user_model.objects.create_superuser(ADMIN_USERNAME, "admin@example.com", password)
    elif (embedded.var_dir() / "admin_password").exists():
        password = _admin_password()
    return DemoInstallation(tenant, bot, connector, ADMIN_USERNAME, password)


def demo_connector() -> Connector | None:
    return (
        Connector.objects.select_related("bot")
        .filter(tenant__slug=DEMO_TENANT_SLUG, name=DEMO_CONNECTOR_NAME)
        .first()
    )
