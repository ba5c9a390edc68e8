"""API keys in the console: shown once, stored hashed, revocable, tenant-scoped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_a_new_key_is_shown_once_and_only_its_hash_is_stored(
    admin_of: Callable[[Any], Client], tenant: Any
) -> None:
    from switchboard.apikeys.models import ApiKey
    from switchboard.apikeys.services import api_key_authenticate

    client = admin_of(tenant)
    response = client.post(
        "/console/keys/new/", {"name": "CRM", "scopes": ["read", "chat"]}, follow=True
    )
    html = response.content.decode()
    key = ApiKey.objects.get(tenant=tenant, name="CRM")
    start = html.index('<pre id="new-api-key">') + len('<pre id="new-api-key">')
    plaintext = html[start : html.index("</pre>", start)]
    assert plaintext.startswith(f"sb_{key.prefix}_")
    assert plaintext not in key.secret_hash
    assert api_key_authenticate(plaintext) == key
    assert plaintext not in client.get("/console/keys/").content.decode()  # once only


def test_a_revoked_key_no_longer_authenticates(
    admin_of: Callable[[Any], Client], tenant: Any
) -> None:
    from switchboard.apikeys.services import api_key_authenticate, api_key_create

    key, plaintext = api_key_create(tenant=tenant, name="Old")
    assert api_key_authenticate(plaintext) == key
    assert admin_of(tenant).post(f"/console/keys/{key.pk}/revoke/").status_code == 302
    assert api_key_authenticate(plaintext) is None
    # A right prefix with a wrong secret, and garbage, are refused as well.
    assert api_key_authenticate(plaintext[:-2] + "xx") is None
    assert api_key_authenticate("not a key") is None


def test_viewers_see_keys_but_cannot_create_or_revoke(
    viewer_of: Callable[[Any], Client], tenant: Any
) -> None:
    from switchboard.apikeys.services import api_key_create

    key, _ = api_key_create(tenant=tenant, name="Visible")
    client = viewer_of(tenant)
    page = client.get("/console/keys/").content.decode()
    assert "Visible" in page and "Create key" not in page
    assert client.post("/console/keys/new/", {"name": "x"}).status_code == 403
    assert client.post(f"/console/keys/{key.pk}/revoke/").status_code == 403


def test_another_tenants_key_is_invisible_and_cannot_be_revoked(
    admin_of: Callable[[Any], Client], tenant: Any, other_tenant: Any
) -> None:
    from switchboard.apikeys.models import ApiKey
    from switchboard.apikeys.services import api_key_create

    theirs, _ = api_key_create(tenant=other_tenant, name="Theirs")
    client = admin_of(tenant)
    assert "Theirs" not in client.get("/console/keys/").content.decode()
    assert client.post(f"/console/keys/{theirs.pk}/revoke/").status_code == 404
    assert ApiKey.objects.get(pk=theirs.pk).revoked_at is None


def test_an_empty_name_is_a_form_error(admin_of: Callable[[Any], Client], tenant: Any) -> None:
    from switchboard.apikeys.models import ApiKey

    response = admin_of(tenant).post("/console/keys/new/", {"name": "  "})
    assert response.status_code == 400
    assert not ApiKey.objects.filter(tenant=tenant).exists()


def test_operators_pick_a_tenant_first(operator_client: Client) -> None:
    page = operator_client.get("/console/keys/")
    assert page.status_code == 200
    assert "Pick a tenant" in page.content.decode()
