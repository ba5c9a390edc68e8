"""A licence's max_bots and connector kinds, checked when bots and connectors are made."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from switchboard.bots import services
from switchboard.bots.models import Connector
from switchboard.licensing.services import licence_import

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("trusted")]


def test_max_bots_refuses_one_more(tenant, issue):
    services.bot_create(tenant=tenant, name="One")
    licence_import(text=issue(tenant.slug, max_bots=2))
    second = services.bot_create(tenant=tenant, name="Two")

    with pytest.raises(ValidationError, match=r"already has 2 bot\(s\).*licence allows \(2\)"):
        services.bot_create(tenant=tenant, name="Three")
    # Existing bots stay editable.
    second.name = "Second"
    second.full_clean()


def test_free_tier_max_bots(tenant, settings):
    settings.SWITCHBOARD_FREE_TIER = {**settings.SWITCHBOARD_FREE_TIER, "max_bots": 1}
    services.bot_create(tenant=tenant, name="One")

    with pytest.raises(ValidationError, match="free tier allows"):
        services.bot_create(tenant=tenant, name="Two")


def test_no_max_bots_means_no_limit(tenant, issue):
    licence_import(text=issue(tenant.slug, max_bots=None))

    for n in range(7):
        services.bot_create(tenant=tenant, name=f"Bot {n}")


def test_connector_kind_outside_the_licence_is_refused(tenant, issue):
    bot = services.bot_create(tenant=tenant, name="Helper")
    existing = services.connector_create_webhook(bot=bot, name="Before")
    licence_import(text=issue(tenant.slug, connector_kinds=("dingtalk",)))

    with pytest.raises(ValidationError, match="does not allow webhook connectors"):
        services.connector_create_webhook(bot=bot, name="Orders")
    services.connector_create_dingtalk(bot=bot, name="IM", app_key="k", app_secret="s")
    # A connector made before stays editable, but cannot change to an unlicensed kind.
    existing.name = "Renamed"
    existing.full_clean()
    existing.kind = Connector.Kind.ALIGENIE
    with pytest.raises(ValidationError, match=r"allowed: dingtalk"):
        existing.full_clean()
