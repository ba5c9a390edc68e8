"""The connector admin: write-only secrets, the actions, and who may change what."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from connectors.aligenie import public_key_pem
from switchboard.bots import services
from switchboard.bots.models import Connector

pytestmark = pytest.mark.django_db

ADD = reverse("admin:bots_connector_add")
LIST = reverse("admin:bots_connector_changelist")
GOOD = {"message_id": "m-1", "user_id": "u-1", "text": "hello"}


def change_url(connector: Connector) -> str:
    return reverse("admin:bots_connector_change", args=[connector.pk])


def form_data(owner: Any, **overrides: Any) -> dict[str, Any]:
    """What the add/change form posts, for a webhook connector of `owner` (a bot)."""
    data: dict[str, Any] = {
        "tenant": str(owner.tenant_id),
        "bot": str(owner.pk),
        "kind": "webhook",
        "name": "Orders",
        "enabled": "on",
        "callback_url": "",
        "verification_profile": "standard",
        "dingtalk_mode": "http",
        "app_key": "",
        "robot_code": "",
        "corp_id": "",
        "skill_id": "",
        "voice_budget_ms": "2500",
        "ownership_file_name": "",
        "ownership_file_content": "",
        "new_secret": "",
        "new_private_key": "",
        "_save": "Save",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def data_of(connector: Connector, **overrides: Any) -> dict[str, Any]:
    data = form_data(
        connector.bot,
        kind=connector.kind,
        name=connector.name,
        enabled="on" if connector.enabled else None,
        callback_url=connector.callback_url,
        verification_profile=connector.verification_profile,
        allow_private_callback="on" if connector.allow_private_callback else None,
        dingtalk_mode=connector.dingtalk_mode,
        app_key=connector.app_key,
    )
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def page_text(response: Any) -> str:
    return html.unescape(response.content.decode())


def run_action(client: Client, action: str, *connectors: Connector) -> str:
    response = client.post(
        LIST,
        {"action": action, "_selected_action": [str(c.pk) for c in connectors]},
        follow=True,
    )
    assert response.status_code == 200
    return page_text(response)


# --- secrets are write-only -------------------------------------------------------------


def test_new_webhook_connector_gets_a_generated_secret_shown_once(admin_client, bot):
    response = admin_client.post(ADD, form_data(bot), follow=True)
    assert response.status_code == 200
    connector = Connector.objects.get(name="Orders")
    assert connector.secret.startswith("whsec_")
    assert f"Signing secret (shown once, copy it now): {connector.secret}" in page_text(response)

    assert connector.secret not in page_text(admin_client.get(change_url(connector)))
    assert connector.secret not in page_text(admin_client.get(LIST))


def test_saving_a_webhook_connector_keeps_its_secret_and_shows_nothing(admin_client, connector):
    before = connector.secret
    response = admin_client.post(
        change_url(connector), data_of(connector, name="Renamed"), follow=True
    )
    assert response.status_code == 200
    connector.refresh_from_db()
    assert connector.name == "Renamed" and connector.secret == before
    assert before not in page_text(response)
    assert "shown once" not in page_text(response)


def test_new_secret_field_sets_a_dingtalk_secret_without_echoing_it(admin_client, bot):
    data = form_data(bot, kind="dingtalk", app_key="ding-app", new_secret="dt-client-secret-1")
    response = admin_client.post(ADD, data, follow=True)
    assert response.status_code == 200
    connector = Connector.objects.get(kind="dingtalk")
    assert connector.secret == "dt-client-secret-1"
    assert "dt-client-secret-1" not in page_text(response)
    assert "dt-client-secret-1" not in page_text(admin_client.get(change_url(connector)))


def test_dingtalk_connector_without_a_secret_is_refused(admin_client, bot):
    response = admin_client.post(ADD, form_data(bot, kind="dingtalk", app_key="ding-app"))
    assert response.status_code == 200  # the form again, with the error
    errors = response.context["adminform"].form.errors
    assert "Client Secret" in " ".join(errors["new_secret"])
    assert not Connector.objects.exists()


def test_editing_a_dingtalk_connector_keeps_its_secret_when_none_is_typed(admin_client, bot):
    connector = services.connector_create_dingtalk(
        bot=bot, name="DT", app_key="ding-app", app_secret="kept-secret"
    )
    response = admin_client.post(change_url(connector), data_of(connector, robot_code="rc-1"))
    assert response.status_code == 302, response.context["adminform"].form.errors
    connector.refresh_from_db()
    assert (connector.secret, connector.robot_code) == ("kept-secret", "rc-1")


def test_bot_of_another_tenant_is_refused_and_typed_secret_not_echoed(admin_client, bot):
    from switchboard.tenants.models import Tenant

    other = Tenant.objects.create(name="Other", slug="other-tenant")
    foreign_bot = services.bot_create(tenant=other, name="Theirs")
    data = form_data(
        bot, bot=str(foreign_bot.pk), kind="dingtalk", app_key="k", new_secret="typed-secret-2"
    )
    response = admin_client.post(ADD, data)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["bot"] == [
        "The bot belongs to another tenant."
    ]
    assert "typed-secret-2" not in page_text(response)
    assert not Connector.objects.exists()


def test_typed_private_key_is_not_rendered_back_when_the_form_is_refused(admin_client, bot):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    data = form_data(bot, kind="aligenie", skill_id="99", new_private_key=pem, name="")
    response = admin_client.post(ADD, data)
    assert response.status_code == 200
    assert "name" in response.context["adminform"].form.errors
    page = page_text(response)
    assert "PRIVATE KEY" not in page
    for line in pem.splitlines()[1:-1]:
        assert line not in page
    assert not Connector.objects.exists()


def test_aligenie_change_page_shows_neither_private_key_nor_token_outside_the_url(
    admin_client, bot
):
    connector = services.connector_create_aligenie(bot=bot, name="Genie", skill_id=123456)
    services.connector_generate_keypair(connector=connector)
    connector.refresh_from_db()
    page = page_text(admin_client.get(change_url(connector)))

    assert connector.private_key
    assert "PRIVATE KEY" not in page
    for line in connector.private_key.splitlines()[1:-1]:
        assert line not in page
    assert page.count(connector.path_token) == 1
    assert f"<code>/hooks/aligenie/{connector.pk}/{connector.path_token}/</code>" in page


# --- actions ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("purge_queues")
def test_rotate_secret_replaces_it_and_old_signatures_then_fail(
    admin_client, connector, post_webhook: Callable[..., httpx.Response]
):
    old = connector.secret
    page = run_action(admin_client, "rotate_secret", connector)
    connector.refresh_from_db()
    assert connector.secret != old and connector.secret.startswith("whsec_")
    assert f"new secret (shown once): {connector.secret}" in page

    refused = post_webhook(connector, GOOD, secret=old)
    assert refused.status_code == 401 and "does not match" in refused.json()["error"]["message"]
    accepted = post_webhook(connector, GOOD)
    assert accepted.status_code == 202, accepted.text


def test_rotate_secret_gives_aligenie_a_new_url_and_refuses_dingtalk(admin_client, bot):
    genie = services.connector_create_aligenie(bot=bot, name="Genie", skill_id=1)
    ding = services.connector_create_dingtalk(bot=bot, name="DT", app_key="k", app_secret="s1")
    old_token = genie.path_token

    page = run_action(admin_client, "rotate_secret", genie, ding)
    genie.refresh_from_db()
    ding.refresh_from_db()
    assert genie.path_token != old_token
    assert f"new URL (shown once): /hooks/aligenie/{genie.pk}/{genie.path_token}/" in page
    assert ding.secret == "s1"
    assert "DingTalk secrets come from the DingTalk console" in page


def test_generate_keypair_stores_a_private_key_and_shows_the_public_key(admin_client, bot):
    genie = services.connector_create_aligenie(bot=bot, name="Genie", skill_id=1)
    assert genie.private_key == ""

    page = run_action(admin_client, "generate_keypair", genie)
    genie.refresh_from_db()
    assert "BEGIN PRIVATE KEY" in genie.private_key
    public = public_key_pem(genie.private_key)
    assert "BEGIN PUBLIC KEY" in public
    assert public.strip() in page
    assert "PRIVATE KEY" not in page


def test_disable_and_enable_actions_flip_the_connector_and_reset_failures(admin_client, connector):
    Connector.objects.filter(pk=connector.pk).update(consecutive_permanent_failures=3)
    assert "1 connector(s) disabled." in run_action(admin_client, "disable", connector)
    connector.refresh_from_db()
    assert connector.enabled is False

    assert "1 connector(s) enabled." in run_action(admin_client, "enable", connector)
    connector.refresh_from_db()
    assert connector.enabled is True and connector.consecutive_permanent_failures == 0


# --- who may open the SSRF guard ----------------------------------------------------------


@pytest.fixture
def staff_client(db: None) -> Client:
    user = User.objects.create_user("staff", password="pw-staff-1", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="bots",
            codename__in=["view_connector", "add_connector", "change_connector"],
        )
    )
    client = Client()
    client.force_login(user)
    return client


def test_staff_without_superuser_cannot_allow_private_callbacks(staff_client, bot):
    connector = services.connector_create_webhook(
        bot=bot, name="Tenant hook", callback_url="https://example.com/cb"
    )
    data = data_of(connector, name="Edited by staff", allow_private_callback="on")
    response = staff_client.post(change_url(connector), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    connector.refresh_from_db()
    assert connector.name == "Edited by staff"  # the rest of the form was saved
    assert connector.allow_private_callback is False


def test_staff_without_superuser_cannot_create_a_connector_with_private_callbacks(
    staff_client, bot
):
    data = form_data(bot, callback_url="http://10.0.0.5/cb", allow_private_callback="on")
    response = staff_client.post(ADD, data)
    # The posted flag is ignored, so the private callback URL itself is refused.
    assert response.status_code == 200
    assert "private" in page_text(response) or "10.0.0.5" in page_text(response)
    assert not Connector.objects.filter(name="Orders").exists()


def test_staff_without_superuser_cannot_withdraw_an_operators_private_callback(staff_client, bot):
    connector = services.connector_create_webhook(
        bot=bot, name="Ops hook", callback_url="http://10.0.0.5/cb", allow_private_callback=True
    )
    data = data_of(connector, allow_private_callback=None)
    assert staff_client.post(change_url(connector), data).status_code == 302
    connector.refresh_from_db()
    assert connector.allow_private_callback is True


def test_superuser_can_allow_private_callbacks(admin_client, bot):
    connector = services.connector_create_webhook(bot=bot, name="Hook", callback_url="")
    data = data_of(connector, allow_private_callback="on")
    assert admin_client.post(change_url(connector), data).status_code == 302
    connector.refresh_from_db()
    assert connector.allow_private_callback is True


# --- the ingress URL ----------------------------------------------------------------------


def _webhook(bot: Any) -> Connector:
    return services.connector_create_webhook(bot=bot, name="W")


def _dingtalk_http(bot: Any) -> Connector:
    return services.connector_create_dingtalk(bot=bot, name="D", app_key="k", app_secret="s")


def _aligenie(bot: Any) -> Connector:
    return services.connector_create_aligenie(bot=bot, name="A", skill_id=7)


@pytest.mark.parametrize(
    "make, route",
    [
        (_webhook, "hooks:webhook"),
        (_dingtalk_http, "hooks:dingtalk"),
        (_aligenie, "hooks:aligenie"),
    ],
)
def test_ingress_url_is_the_exact_path_the_provider_must_call(admin_client, bot, make, route):
    connector = make(bot)
    args = [str(connector.pk)]
    if connector.kind == Connector.Kind.ALIGENIE:
        args.append(connector.path_token)
    path = reverse(route, args=args)
    page = page_text(admin_client.get(change_url(connector)))
    assert f"<code>{path}</code>" in page


def test_ingress_url_of_a_stream_mode_connector_says_it_connects_out(admin_client, bot):
    connector = services.connector_create_dingtalk(
        bot=bot, name="S", app_key="k", app_secret="s", mode=Connector.DingTalkMode.STREAM
    )
    page = page_text(admin_client.get(change_url(connector)))
    assert "Stream mode connects out" in page
    assert f"/hooks/dingtalk/{connector.pk}/" not in page


def test_add_page_shows_no_ingress_url_before_the_connector_exists(admin_client, bot):
    # An unsaved connector already has a (random) UUID, but not the one it is saved with.
    page = page_text(admin_client.get(ADD))
    assert "/hooks/" not in page


def test_callback_url_on_a_private_address_is_refused_when_saved(admin_client, bot):
    response = admin_client.post(ADD, form_data(bot, callback_url="http://127.0.0.1:9/cb"))
    assert response.status_code == 200
    assert "127.0.0.1" in page_text(response)
    assert not Connector.objects.filter(name="Orders").exists()


def test_callback_url_that_does_not_resolve_yet_is_accepted_when_saved(admin_client, bot):
    # Split-horizon or not-yet-created DNS: the guard on every connection decides later.
    response = admin_client.post(ADD, form_data(bot, callback_url="https://hooks.invalid/cb"))
    assert response.status_code == 302, page_text(response)[:2000]
    assert Connector.objects.get(name="Orders").callback_url == "https://hooks.invalid/cb"


def test_operator_may_save_a_private_callback_url(admin_client, bot):
    data = form_data(bot, callback_url="http://127.0.0.1:9/cb", allow_private_callback="on")
    assert admin_client.post(ADD, data).status_code == 302
    assert Connector.objects.get(name="Orders").allow_private_callback is True
