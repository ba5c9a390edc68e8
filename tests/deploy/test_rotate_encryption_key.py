"""`rotate_encryption_key`: every encrypted column re-encrypted with the new first key,
in one transaction, idempotently; readable with the new key alone afterwards."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import override_settings

from switchboard.bots.models import Connector
from switchboard.core.fields import encrypted_fields
from switchboard.tenants.models import Tenant

pytestmark = pytest.mark.django_db


def _raw(table: str, column: str, pk: Any) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [pk])  # noqa: S608
        return cursor.fetchone()[0]


def _set_raw(table: str, column: str, pk: Any, value: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET {column} = %s WHERE id = %s", [value, pk])  # noqa: S608


def _run(*args: str) -> str:
    out = StringIO()
    call_command("rotate_encryption_key", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def secrets_at_rest(connector: Connector, tenant: Tenant) -> dict[str, Any]:
    """Secrets in two tables under the current key, plus an AliGenie-style connector with
    three encrypted columns, and an empty one that must stay empty."""
    tenant.alert_webhook_secret = "whsec_alerts"
    tenant.save()
    voice = Connector.objects.create(
        tenant=tenant,
        bot=connector.bot,
        kind=Connector.Kind.ALIGENIE,
        name="Speaker",
        path_token="token-123",
        private_key="-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n",
    )
    return {
        "connector": (connector.pk, connector.secret),
        "tenant": (tenant.pk, "whsec_alerts"),
        "voice_token": (voice.pk, "token-123"),
        "voice_key": (voice.pk, voice.private_key),
    }


def _raw_values(secrets: dict[str, Any]) -> dict[str, str]:
    return {
        "connector": _raw("bots_connector", "secret", secrets["connector"][0]),
        "tenant": _raw("tenants_tenant", "alert_webhook_secret", secrets["tenant"][0]),
        "voice_token": _raw("bots_connector", "path_token", secrets["voice_token"][0]),
        "voice_key": _raw("bots_connector", "private_key", secrets["voice_key"][0]),
    }


def test_every_encrypted_column_is_found() -> None:
    found = {f"{model._meta.label}.{field.name}" for model, field in encrypted_fields()}
    assert {
        "bots.Connector.secret",
        "bots.Connector.path_token",
        "bots.Connector.private_key",
        "tenants.Tenant.alert_webhook_secret",
    } <= found


def test_rotation_moves_every_secret_to_the_new_key(
    secrets_at_rest: dict[str, Any], settings: Any
) -> None:
    new_key = Fernet.generate_key().decode()
    new = Fernet(new_key.encode())
    with override_settings(
        SWITCHBOARD_ENCRYPTION_KEYS=[new_key, *settings.SWITCHBOARD_ENCRYPTION_KEYS]
    ):
        with pytest.raises(CommandError, match="still need an old key"):
            _run("--check")
        output = _run()
        assert "bots.Connector.secret: " in output
        for name, token in _raw_values(secrets_at_rest).items():
            assert new.decrypt(token.encode()).decode() == secrets_at_rest[name][1], name
        assert "old keys can be removed" in _run("--check")
        # Idempotent: a second run rewrites nothing.
        before = _raw_values(secrets_at_rest)
        again = _run()
        assert _raw_values(secrets_at_rest) == before
        assert " 0 re-encrypted" in again and " 1 re-encrypted" not in again
    # The old key can go: everything reads with the new one alone.
    with override_settings(SWITCHBOARD_ENCRYPTION_KEYS=[new_key]):
        pk, secret = secrets_at_rest["connector"]
        assert Connector.objects.get(pk=pk).secret == secret
        assert Tenant.objects.get(pk=secrets_at_rest["tenant"][0]).alert_webhook_secret == (
            "whsec_alerts"
        )


def test_empty_values_stay_empty(secrets_at_rest: dict[str, Any], settings: Any) -> None:
    pk = secrets_at_rest["connector"][0]
    assert _raw("bots_connector", "private_key", pk) == ""
    new_key = Fernet.generate_key().decode()
    with override_settings(
        SWITCHBOARD_ENCRYPTION_KEYS=[new_key, *settings.SWITCHBOARD_ENCRYPTION_KEYS]
    ):
        _run()
    assert _raw("bots_connector", "private_key", pk) == ""


def test_a_value_no_key_opens_stops_the_rotation_and_changes_nothing(
    secrets_at_rest: dict[str, Any], settings: Any
) -> None:
    stranger = Fernet(Fernet.generate_key()).encrypt(b"lost").decode()
    pk = secrets_at_rest["voice_key"][0]
    _set_raw("bots_connector", "private_key", pk, stranger)
    before = _raw_values(secrets_at_rest)
    new_key = Fernet.generate_key().decode()
    with (
        override_settings(
            SWITCHBOARD_ENCRYPTION_KEYS=[new_key, *settings.SWITCHBOARD_ENCRYPTION_KEYS]
        ),
        pytest.raises(CommandError, match=f"{pk}: private_key cannot be decrypted"),
    ):
        _run()
    assert _raw_values(secrets_at_rest) == before
    with pytest.raises(InvalidToken):
        Fernet(new_key.encode()).decrypt(before["connector"].encode())


def test_generate_key_prints_a_usable_key_and_touches_nothing(
    secrets_at_rest: dict[str, Any],
) -> None:
    before = _raw_values(secrets_at_rest)
    output = _run("--generate-key")
    line = next(line for line in output.splitlines() if "SWITCHBOARD_ENCRYPTION_KEY=" in line)
    key = line.split("=", 1)[1].split(",", 1)[0]
    assert Fernet(key.encode()).decrypt(Fernet(key.encode()).encrypt(b"x")) == b"x"
    assert _raw_values(secrets_at_rest) == before
