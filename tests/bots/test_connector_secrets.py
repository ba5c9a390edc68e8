from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.db import connection
from django.test import override_settings

from switchboard.bots.models import Connector

pytestmark = pytest.mark.django_db


def _raw_secret(connector: Connector) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM bots_connector WHERE id = %s", [connector.pk])
        return cursor.fetchone()[0]


def test_secret_is_encrypted_at_rest_and_readable_in_python(connector):
    raw = _raw_secret(connector)
    assert connector.secret.startswith("whsec_")
    assert connector.secret not in raw
    assert Connector.objects.get(pk=connector.pk).secret == connector.secret


def test_a_new_key_can_be_added_in_front_and_old_secrets_still_decrypt(connector, settings):
    new_key = Fernet.generate_key().decode()
    keys = [new_key, *settings.SWITCHBOARD_ENCRYPTION_KEYS]
    with override_settings(SWITCHBOARD_ENCRYPTION_KEYS=keys):
        assert Connector.objects.get(pk=connector.pk).secret == connector.secret
        connector.save()  # re-encrypts with the new first key
        assert Fernet(new_key.encode()).decrypt(_raw_secret(connector).encode()).decode() == (
            connector.secret
        )


def test_a_wrong_key_is_a_clear_error(connector):
    with (
        override_settings(SWITCHBOARD_ENCRYPTION_KEYS=[Fernet.generate_key().decode()]),
        pytest.raises(ValueError, match="SWITCHBOARD_ENCRYPTION_KEY"),
    ):
        Connector.objects.get(pk=connector.pk)
