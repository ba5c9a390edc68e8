"""Writes for bots and connectors (reads live in selectors)."""

from __future__ import annotations

from django.db import transaction

from connectors.webhook import generate_secret
from switchboard.bots.models import DEFAULT_MODEL, Bot, Connector
from switchboard.tenants.models import Tenant


@transaction.atomic
def bot_create(
    *,
    tenant: Tenant,
    name: str,
    system_prompt: str = "You are a helpful assistant.",
    model_name: str = DEFAULT_MODEL,
    temperature: float = 0.7,
    max_tokens: int = 512,
    history_window: int = 10,
) -> Bot:
    bot = Bot(
        tenant=tenant,
        name=name,
        system_prompt=system_prompt,
        model_name=model_name,
        temperature=temperature,
        max_tokens=max_tokens,
        history_window=history_window,
    )
    bot.full_clean()
    bot.save()
    return bot


@transaction.atomic
def connector_create_webhook(
    *, bot: Bot, name: str, callback_url: str = "", secret: str | None = None
) -> Connector:
    """Create a signed-webhook connector; the caller shows the secret once."""
    connector = Connector(
        tenant_id=bot.tenant_id,
        bot=bot,
        kind=Connector.Kind.WEBHOOK,
        name=name,
        secret=secret or generate_secret(),
        callback_url=callback_url,
    )
    connector.full_clean()
    connector.save()
    return connector
