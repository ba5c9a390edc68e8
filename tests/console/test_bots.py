"""Console bots and connectors: roles, tenant isolation, write-only secrets, previews."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from switchboard.bots import services
from switchboard.bots.models import Bot, Connector
from switchboard.licensing.services import limits_cache_clear

pytestmark = pytest.mark.django_db

PUBLIC_CALLBACK = "https://93.184.215.14/replies"  # a literal public address: no DNS


@pytest.fixture(autouse=True)
def _fresh_limits_cache() -> Iterator[None]:
    limits_cache_clear()
    yield
    limits_cache_clear()


def free_tier(settings: Any, **changes: Any) -> None:
    """Change the free tier's limits; the limits cached while fixtures ran are dropped."""
    settings.SWITCHBOARD_FREE_TIER = {**settings.SWITCHBOARD_FREE_TIER, **changes}
    limits_cache_clear()


@pytest.fixture
def webhook(bot: Bot) -> Connector:
    return services.connector_create_webhook(bot=bot, name="Orders")


@pytest.fixture
def foreign(other_tenant: Any) -> tuple[Bot, Connector]:
    """Another tenant's bot and webhook connector."""
    bot = services.bot_create(tenant=other_tenant, name="Theirs", system_prompt="Secret sauce")
    return bot, services.connector_create_webhook(bot=bot, name="Their hook")


def bot_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "Support",
        "system_prompt": "You answer questions about {product}.",
        "model_name": "Qwen/Qwen-7B-Chat",
        "temperature": "0.3",
        "max_tokens": "256",
        "history_window": "6",
        "routing_strategy": "least_loaded",
        "language": "en",
        "reply_format": "markdown",
        "unsupported_message_reply": "Text only, please.",
        "voice_instructions": "Keep it short.",
        "voice_max_chars": "120",
        "voice_pending_reply": "One moment.",
    }
    data.update(overrides)
    return data


def connector_url(name: str, connector: Connector) -> str:
    return reverse(f"console:{name}", args=[connector.bot_id, connector.pk])


def test_viewer_reads_but_every_write_is_forbidden(
    viewer_of: Callable[[Any], Client], tenant: Any, bot: Bot, webhook: Connector
) -> None:
    client = viewer_of(tenant)

    listing = client.get(reverse("console:bot_list"))
    assert listing.status_code == 200
    assert bot.name in listing.content.decode()
    assert reverse("console:bot_create") not in listing.content.decode()
    detail = client.get(reverse("console:bot_detail", args=[bot.pk]))
    assert detail.status_code == 200
    assert webhook.name in detail.content.decode()
    page = client.get(connector_url("connector_detail", webhook))
    assert page.status_code == 200
    assert webhook.secret not in page.content.decode()

    forbidden = [
        ("post", reverse("console:bot_create"), bot_data(name="New")),
        ("get", reverse("console:bot_edit", args=[bot.pk]), None),
        ("post", reverse("console:bot_edit", args=[bot.pk]), bot_data()),
        ("post", reverse("console:bot_set_active", args=[bot.pk]), {"active": "0"}),
        ("post", reverse("console:bot_preview"), {"system_prompt": "x"}),
        ("post", reverse("console:connector_create", args=[bot.pk, "webhook"]), {"name": "W"}),
        ("post", connector_url("connector_edit", webhook), {"name": "Renamed"}),
        ("post", connector_url("connector_rotate", webhook), {}),
        ("post", connector_url("connector_set_enabled", webhook), {"enabled": "0"}),
    ]
    for method, url, data in forbidden:
        assert getattr(client, method)(url, data or {}).status_code == 403, url

    bot.refresh_from_db()
    webhook_after = Connector.objects.get(pk=webhook.pk)
    assert (bot.name, bot.is_active) == ("Helper", True)
    assert Bot.objects.for_tenant(tenant).count() == 1
    assert (webhook_after.name, webhook_after.enabled) == ("Orders", True)
    assert webhook_after.secret == webhook.secret


def test_admin_creates_a_bot_and_a_webhook_connector_and_sees_the_secret_once(
    admin_of: Callable[[Any], Client], tenant: Any
) -> None:
    client = admin_of(tenant)
    assert client.get(reverse("console:bot_create")).status_code == 200

    created = client.post(reverse("console:bot_create"), bot_data())
    bot = Bot.objects.for_tenant(tenant).get(name="Support")
    assert created.status_code == 302
    assert created["Location"] == reverse("console:bot_detail", args=[bot.pk])
    assert bot.system_prompt == "You answer questions about {product}."
    assert (bot.temperature, bot.max_tokens, bot.history_window) == (0.3, 256, 6)
    assert (bot.routing_strategy, bot.language, bot.reply_format) == (
        "least_loaded",
        "en",
        "markdown",
    )
    assert (bot.voice_instructions, bot.voice_max_chars, bot.voice_pending_reply) == (
        "Keep it short.",
        120,
        "One moment.",
    )
    assert bot.unsupported_message_reply == "Text only, please."

    answer = client.post(
        reverse("console:connector_create", args=[bot.pk, "webhook"]),
        {"name": "ERP", "callback_url": PUBLIC_CALLBACK, "verification_profile": "github"},
        follow=True,
    )
    connector = Connector.objects.for_tenant(tenant).get(name="ERP")
    page = answer.content.decode()
    assert answer.redirect_chain[-1][0] == connector_url("connector_detail", connector)
    assert (connector.kind, connector.bot_id) == ("webhook", bot.pk)
    assert connector.callback_url == PUBLIC_CALLBACK
    assert connector.verification_profile == "github"
    # The exact URL to paste, absolute, matching the ingress route.
    expected = "http://testserver" + services.connector_ingress_path(connector)
    assert expected == f"http://testserver/hooks/webhook/{connector.pk}/"
    assert expected in page
    assert connector.secret and connector.secret in page

    later = client.get(connector_url("connector_detail", connector)).content.decode()
    assert expected in later
    assert connector.secret not in later
    edit = client.get(connector_url("connector_edit", connector)).content.decode()
    assert connector.secret not in edit


def test_rotation_shows_the_new_secret_once(
    admin_of: Callable[[Any], Client], tenant: Any, webhook: Connector
) -> None:
    client = admin_of(tenant)
    old = webhook.secret

    answer = client.post(connector_url("connector_rotate", webhook), follow=True)

    webhook.refresh_from_db()
    page = answer.content.decode()
    assert webhook.secret != old
    assert webhook.secret in page
    assert old not in page
    assert (
        webhook.secret
        not in client.get(connector_url("connector_detail", webhook)).content.decode()
    )


def test_dingtalk_secrets_cannot_be_rotated_here(
    admin_of: Callable[[Any], Client], tenant: Any, bot: Bot
) -> None:
    connector = services.connector_create_dingtalk(
        bot=bot, name="DT", app_key="ding-key", app_secret="ding-secret-value"
    )

    answer = admin_of(tenant).post(connector_url("connector_rotate", connector), follow=True)

    connector.refresh_from_db()
    assert connector.secret == "ding-secret-value"
    assert "DingTalk developer console" in answer.content.decode()


def test_prompt_preview_renders_the_system_prompt_and_trimmed_history(
    admin_of: Callable[[Any], Client], tenant: Any
) -> None:
    answer = admin_of(tenant).post(
        reverse("console:bot_preview"),
        {"system_prompt": "You are Zed. Keep {braces} and <b>tags</b>.", "history_window": "2"},
    )

    page = answer.content.decode()
    assert answer.status_code == 200
    assert "<html" not in page  # a fragment for htmx to swap in
    # The prompt is text, never template syntax, and it is escaped.
    assert "You are Zed. Keep {braces} and &lt;b&gt;tags&lt;/b&gt;." in page
    assert "And on public holidays?" in page
    assert "Hello, when are you open?" not in page  # outside the history window
    assert "Can I visit next Monday morning?" in page


def test_bot_pages_show_the_stored_prompt_preview(
    admin_of: Callable[[Any], Client], tenant: Any, bot: Bot
) -> None:
    client = admin_of(tenant)
    detail = client.get(reverse("console:bot_detail", args=[bot.pk])).content.decode()
    assert "You are {terse}." in detail
    edit = client.get(reverse("console:bot_edit", args=[bot.pk])).content.decode()
    assert reverse("console:bot_preview") in edit
    assert 'hx-include="#bot-form"' in edit


def test_the_licence_max_bots_is_a_form_error(
    admin_of: Callable[[Any], Client], tenant: Any, bot: Bot, settings: Any
) -> None:
    free_tier(settings, max_bots=1)

    answer = admin_of(tenant).post(reverse("console:bot_create"), bot_data())

    assert answer.status_code == 200
    assert "the most its free tier allows (1)" in answer.content.decode()
    assert Bot.objects.for_tenant(tenant).count() == 1


def test_a_duplicate_bot_name_is_a_form_error(
    admin_of: Callable[[Any], Client], tenant: Any, bot: Bot, other_tenant: Any
) -> None:
    services.bot_create(tenant=other_tenant, name="Support")  # other tenants do not count
    client = admin_of(tenant)

    assert client.post(reverse("console:bot_create"), bot_data()).status_code == 302
    again = client.post(reverse("console:bot_create"), bot_data())
    assert again.status_code == 200
    assert "already has a bot with this name" in again.content.decode()
    renamed = client.post(reverse("console:bot_edit", args=[bot.pk]), bot_data())
    assert "already has a bot with this name" in renamed.content.decode()


def test_admin_edits_and_deactivates_a_bot(
    admin_of: Callable[[Any], Client], tenant: Any, bot: Bot
) -> None:
    client = admin_of(tenant)

    saved = client.post(
        reverse("console:bot_edit", args=[bot.pk]),
        bot_data(name="Helper", system_prompt="Be brief.", temperature="5"),
    )
    assert saved.status_code == 200  # temperature out of range
    assert Bot.objects.get(pk=bot.pk).system_prompt == "You are {terse}."

    saved = client.post(
        reverse("console:bot_edit", args=[bot.pk]),
        bot_data(name="Helper", system_prompt="Be brief.", routing_strategy=""),
    )
    assert saved.status_code == 302
    bot.refresh_from_db()
    assert (bot.system_prompt, bot.routing_strategy) == ("Be brief.", "")

    client.post(reverse("console:bot_set_active", args=[bot.pk]), {"active": "0"})
    assert not Bot.objects.get(pk=bot.pk).is_active
    client.post(reverse("console:bot_set_active", args=[bot.pk]), {"active": "1"})
    assert Bot.objects.get(pk=bot.pk).is_active


def test_a_tenant_admin_gets_404_for_another_tenants_bot_and_connector(
    admin_of: Callable[[Any], Client],
    tenant: Any,
    bot: Bot,
    webhook: Connector,
    foreign: tuple[Bot, Connector],
) -> None:
    their_bot, their_hook = foreign
    client = admin_of(tenant)

    attempts = [
        ("get", reverse("console:bot_detail", args=[their_bot.pk]), None),
        ("get", reverse("console:bot_edit", args=[their_bot.pk]), None),
        ("post", reverse("console:bot_edit", args=[their_bot.pk]), bot_data(name="Pwned")),
        ("post", reverse("console:bot_set_active", args=[their_bot.pk]), {"active": "0"}),
        ("get", reverse("console:connector_create", args=[their_bot.pk, "webhook"]), None),
        (
            "post",
            reverse("console:connector_create", args=[their_bot.pk, "webhook"]),
            {"name": "Mine now", "verification_profile": "standard"},
        ),
        ("get", connector_url("connector_detail", their_hook), None),
        ("get", connector_url("connector_edit", their_hook), None),
        ("post", connector_url("connector_edit", their_hook), {"name": "Pwned"}),
        ("post", connector_url("connector_rotate", their_hook), {}),
        ("post", connector_url("connector_set_enabled", their_hook), {"enabled": "0"}),
        # Their connector under our bot's URL is not found either.
        ("get", reverse("console:connector_detail", args=[bot.pk, their_hook.pk]), None),
        ("post", reverse("console:connector_rotate", args=[bot.pk, their_hook.pk]), {}),
        # Nor ours under theirs.
        ("get", reverse("console:connector_detail", args=[their_bot.pk, webhook.pk]), None),
    ]
    for method, url, data in attempts:
        answer = getattr(client, method)(url, data or {})
        assert answer.status_code == 404, url
        assert "Secret sauce" not in answer.content.decode()

    their_bot.refresh_from_db()
    after = Connector.objects.get(pk=their_hook.pk)
    assert (their_bot.name, their_bot.is_active) == ("Theirs", True)
    assert (after.name, after.enabled, after.secret) == ("Their hook", True, their_hook.secret)
    assert Connector.objects.filter(bot=their_bot).count() == 1
    listing = client.get(reverse("console:bot_list")).content.decode()
    assert "Theirs" not in listing


def test_unknown_ids_and_kinds_are_404(
    admin_of: Callable[[Any], Client], tenant: Any, bot: Bot
) -> None:
    client = admin_of(tenant)
    assert client.get(reverse("console:bot_detail", args=[uuid.uuid4()])).status_code == 404
    assert client.get(f"/console/bots/{bot.pk}/connectors/new/smtp/").status_code == 404


def test_operator_sees_every_tenant_and_needs_one_picked_to_create(
    operator_client: Client, bot: Bot, foreign: tuple[Bot, Connector]
) -> None:
    their_bot, their_hook = foreign

    listing = operator_client.get(reverse("console:bot_list")).content.decode()
    assert bot.name in listing and their_bot.name in listing
    assert operator_client.get(connector_url("connector_detail", their_hook)).status_code == 200
    assert operator_client.get(reverse("console:bot_create")).status_code == 404

    operator_client.post(reverse("console:pick_tenant"), {"tenant": str(bot.tenant_id)})
    assert operator_client.get(reverse("console:bot_create")).status_code == 200
    listing = operator_client.get(reverse("console:bot_list")).content.decode()
    assert bot.name in listing and their_bot.name not in listing


def test_dingtalk_connector_shows_its_url_and_never_its_secret(
    admin_of: Callable[[Any], Client], tenant: Any, bot: Bot
) -> None:
    client = admin_of(tenant)
    create = reverse("console:connector_create", args=[bot.pk, "dingtalk"])

    missing = client.post(create, {"name": "DT", "app_key": "k", "dingtalk_mode": "http"})
    assert missing.status_code == 200
    assert not Connector.objects.for_tenant(tenant).exists()

    answer = client.post(
        create,
        {
            "name": "DT",
            "app_key": "dingabc",
            "app_secret": "s3cret-from-dingtalk",
            "robot_code": "dingabc",
            "corp_id": "ding-corp",
            "dingtalk_mode": "http",
        },
        follow=True,
    )
    connector = Connector.objects.for_tenant(tenant).get(name="DT")
    page = answer.content.decode()
    assert (connector.app_key, connector.secret, connector.corp_id) == (
        "dingabc",
        "s3cret-from-dingtalk",
        "ding-corp",
    )
    assert f"http://testserver/hooks/dingtalk/{connector.pk}/" in page
    assert "s3cret-from-dingtalk" not in page

    # Editing with the secret box empty keeps the secret; switching to Stream mode
    # leaves nothing to paste.
    edited = client.post(
        connector_url("connector_edit", connector),
        {"name": "DT", "app_key": "dingabc", "app_secret": "", "dingtalk_mode": "stream"},
        follow=True,
    )
    connector.refresh_from_db()
    assert connector.secret == "s3cret-from-dingtalk"
    assert connector.dingtalk_mode == "stream"
    assert "/hooks/dingtalk/" not in edited.content.decode()
    assert "Stream mode" in edited.content.decode()


def test_aligenie_connector_shows_its_secret_url_and_public_key_once(
    admin_of: Callable[[Any], Client], tenant: Any, bot: Bot
) -> None:
    client = admin_of(tenant)

    answer = client.post(
        reverse("console:connector_create", args=[bot.pk, "aligenie"]),
        {
            "name": "Speaker",
            "skill_id": "12345",
            "voice_budget_ms": "2000",
            "generate_key": "on",
            "ownership_file_name": "abc123.txt",
            "ownership_file_content": "proof",
        },
        follow=True,
    )
    connector = Connector.objects.for_tenant(tenant).get(name="Speaker")
    page = answer.content.decode()
    secret_url = f"http://testserver/hooks/aligenie/{connector.pk}/{connector.path_token}/"
    assert secret_url == "http://testserver" + services.connector_ingress_path(connector)
    assert secret_url in page
    assert "BEGIN PUBLIC KEY" in page
    assert "http://testserver/aligenie/abc123.txt" in page
    assert connector.private_key and (connector.skill_id, connector.voice_budget_ms) == (
        12345,
        2000,
    )

    later = client.get(connector_url("connector_detail", connector)).content.decode()
    assert connector.path_token not in later
    assert f"http://testserver/hooks/aligenie/{connector.pk}/" in later  # masked token
    assert "PRIVATE KEY" not in later

    bad = client.post(
        reverse("console:connector_create", args=[bot.pk, "aligenie"]),
        {
            "name": "Bad",
            "voice_budget_ms": "2000",
            "private_key": "not a key",
            "ownership_file_name": "../etc/passwd",
        },
    )
    assert bad.status_code == 200
    assert "Not a usable RSA private key" in bad.content.decode()
    assert not Connector.objects.filter(name="Bad").exists()


def test_a_connector_kind_the_licence_excludes_is_a_form_error(
    admin_of: Callable[[Any], Client], tenant: Any, bot: Bot, settings: Any
) -> None:
    free_tier(settings, connector_kinds=["webhook"])

    answer = admin_of(tenant).post(
        reverse("console:connector_create", args=[bot.pk, "dingtalk"]),
        {"name": "DT", "app_key": "k", "app_secret": "s", "dingtalk_mode": "http"},
    )

    assert answer.status_code == 200
    assert "does not allow dingtalk connectors" in answer.content.decode()
    assert not Connector.objects.exists()


def test_private_callbacks_are_refused_unless_an_operator_allows_them(
    admin_of: Callable[[Any], Client],
    operator_client: Client,
    tenant: Any,
    bot: Bot,
    settings: Any,
) -> None:
    settings.SWITCHBOARD_ALLOW_PRIVATE_CALLBACKS = False
    create = reverse("console:connector_create", args=[bot.pk, "webhook"])
    private = {
        "name": "Local",
        "callback_url": "http://127.0.0.1:9/hook",
        "verification_profile": "standard",
        "allow_private_callback": "on",  # ignored: not theirs to set
    }

    refused = admin_of(tenant).post(create, private)
    assert refused.status_code == 200
    assert not Connector.objects.exists()

    assert operator_client.post(create, private).status_code == 302
    assert Connector.objects.get(name="Local").allow_private_callback


def test_admin_disables_and_enables_a_connector(
    admin_of: Callable[[Any], Client], tenant: Any, webhook: Connector
) -> None:
    client = admin_of(tenant)
    url = connector_url("connector_set_enabled", webhook)

    client.post(url, {"enabled": "0"})
    assert not Connector.objects.get(pk=webhook.pk).enabled

    Connector.objects.filter(pk=webhook.pk).update(consecutive_permanent_failures=5)
    client.post(url, {"enabled": "1"})
    after = Connector.objects.get(pk=webhook.pk)
    assert after.enabled and after.consecutive_permanent_failures == 0


def test_connector_status_is_listed_on_the_bot(
    viewer_of: Callable[[Any], Client], tenant: Any, bot: Bot, webhook: Connector
) -> None:
    Connector.objects.filter(pk=webhook.pk).update(
        enabled=False, consecutive_permanent_failures=3, last_error="HTTP 410 from callback"
    )

    page = viewer_of(tenant).get(reverse("console:bot_detail", args=[bot.pk])).content.decode()

    assert "HTTP 410 from callback" in page
    assert "disabled" in page


def test_internal_connectors_are_not_managed_here(
    admin_of: Callable[[Any], Client], tenant: Any, bot: Bot
) -> None:
    # The console's test chat keeps a hidden connector per bot; it is not a channel.
    hidden = Connector.objects.create(tenant=tenant, bot=bot, kind="console", name="Hidden probe")
    client = admin_of(tenant)

    assert (
        "Hidden probe"
        not in client.get(reverse("console:bot_detail", args=[bot.pk])).content.decode()
    )
    assert client.get(connector_url("connector_detail", hidden)).status_code == 404
    assert client.get(connector_url("connector_edit", hidden)).status_code == 404
