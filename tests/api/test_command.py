"""`manage.py api_key`: create (printed once), list, revoke."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.django_db


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command("api_key", *args, stdout=out)
    return out.getvalue().strip()


def test_create_list_revoke(tenant: Any) -> None:
    from switchboard.apikeys.services import api_key_authenticate

    plaintext = _run(
        "create", "--tenant", tenant.slug, "--name", "cli", "--scopes", "chat,read",
        "--expires", "2099-01-01",
    )  # fmt: skip
    key = api_key_authenticate(plaintext)
    assert key is not None and key.scopes == ["read", "chat"]
    assert key.expires_at is not None and key.expires_at.year == 2099
    listed = _run("list", "--tenant", tenant.slug)
    assert f"sb_{key.prefix}_" in listed and "active" in listed and plaintext not in listed
    _run("revoke", key.prefix)
    assert api_key_authenticate(plaintext) is None
    assert "revoked" in _run("list", "--tenant", tenant.slug)


@pytest.mark.parametrize(
    "args",
    [
        ("create", "--tenant", "nobody", "--name", "x"),
        ("create", "--tenant", "{slug}", "--name", "x", "--scopes", "root"),
        ("create", "--tenant", "{slug}", "--name", "x", "--expires", "soon"),
        ("create", "--tenant", "{slug}", "--name", "x", "--expires", "2001-01-01"),
        ("revoke", "nope"),
    ],
)
def test_bad_input_is_a_clear_error(tenant: Any, args: tuple[str, ...]) -> None:
    from switchboard.apikeys.models import ApiKey

    with pytest.raises(CommandError):
        _run(*(a.format(slug=tenant.slug) for a in args))
    assert not ApiKey.objects.exists()
