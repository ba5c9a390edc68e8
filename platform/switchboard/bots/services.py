"""Writes for bots and connectors (reads live in selectors)."""

from __future__ import annotations

import secrets

from django.db import transaction

from connectors.aligenie import load_private_key, public_key_pem, validate_ownership_filename
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
    *,
    bot: Bot,
    name: str,
    callback_url: str = "",
    secret: str | None = None,
    allow_private_callback: bool = False,
) -> Connector:
    """Create a signed-webhook connector; the caller shows the secret once."""
    connector = Connector(
        tenant_id=bot.tenant_id,
        bot=bot,
        kind=Connector.Kind.WEBHOOK,
        name=name,
        secret=secret or generate_secret(),
        callback_url=callback_url,
        allow_private_callback=allow_private_callback,
    )
    connector.full_clean()
    connector.save()
    return connector


def new_path_token() -> str:
    """The secret URL segment of an AliGenie connector (AliGenie signs nothing)."""
    return secrets.token_urlsafe(24)


@transaction.atomic
def connector_create_dingtalk(
    *,
    bot: Bot,
    name: str,
    app_key: str,
    app_secret: str,
    robot_code: str = "",
    corp_id: str = "",
    mode: str = Connector.DingTalkMode.HTTP,
) -> Connector:
    connector = Connector(
        tenant_id=bot.tenant_id,
        bot=bot,
        kind=Connector.Kind.DINGTALK,
        name=name,
        secret=app_secret,
        app_key=app_key,
        robot_code=robot_code,
        corp_id=corp_id,
        dingtalk_mode=mode,
    )
    connector.full_clean()
    connector.save()
    return connector


@transaction.atomic
def connector_create_aligenie(
    *,
    bot: Bot,
    name: str,
    skill_id: int | None,
    private_key: str = "",
    voice_budget_ms: int = 2500,
    ownership_file_name: str = "",
    ownership_file_content: str = "",
) -> Connector:
    if private_key:
        load_private_key(private_key)  # refuse a key we could never decrypt with
    if ownership_file_name:
        validate_ownership_filename(ownership_file_name)
    connector = Connector(
        tenant_id=bot.tenant_id,
        bot=bot,
        kind=Connector.Kind.ALIGENIE,
        name=name,
        skill_id=skill_id,
        path_token=new_path_token(),
        private_key=private_key,
        voice_budget_ms=voice_budget_ms,
        ownership_file_name=ownership_file_name,
        ownership_file_content=ownership_file_content,
    )
    connector.full_clean()
    connector.save()
    return connector


def connector_rotate_secret(*, connector: Connector) -> str:
    """A new webhook signing secret (returned once) or AliGenie URL token."""
    if connector.kind == Connector.Kind.ALIGENIE:
        connector.path_token = new_path_token()
        connector.save(update_fields=["path_token"])
        return connector.path_token
    if connector.kind != Connector.Kind.WEBHOOK:
        raise ValueError("DingTalk secrets come from the DingTalk console; paste the new one")
    connector.secret = generate_secret()
    connector.save(update_fields=["secret"])
    return connector.secret


def connector_generate_keypair(*, connector: Connector) -> str:
    """A new RSA key for AliGenie's encrypted requests; returns the public key to paste."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    # 1024 bits is what AliGenie's protocol documents (117-byte blocks); weak by today's
    # standards, which is why the secret URL token and skill id are checked as well.
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    connector.private_key = pem
    connector.save(update_fields=["private_key"])
    return public_key_pem(pem)


def connector_ingress_path(connector: Connector) -> str:
    if connector.kind == Connector.Kind.ALIGENIE:
        return f"/hooks/aligenie/{connector.pk}/{connector.path_token}/"
    if connector.kind == Connector.Kind.DINGTALK:
        if connector.dingtalk_mode == Connector.DingTalkMode.STREAM:
            return ""
        return f"/hooks/dingtalk/{connector.pk}/"
    if connector.kind == Connector.Kind.CONSOLE:
        return ""  # the console's own test chat: no public ingress
    return f"/hooks/webhook/{connector.pk}/"
