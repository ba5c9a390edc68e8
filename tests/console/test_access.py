"""Console access: sign-in, throttling, roles, language."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_pages_need_a_signed_in_user() -> None:
    response = Client().get("/console/")
    assert response.status_code == 302
    assert response["Location"].startswith("/console/login/?next=/console/")


def test_sign_in_with_a_password_reaches_the_overview(
    make_console_user: Callable[..., Any], tenant: Any
) -> None:
    user = make_console_user("viewer", tenant)
    client = Client()
    response = client.post(
        "/console/login/", {"username": user.username, "password": "correct horse 9"}
    )
    assert response.status_code == 302
    assert client.get("/console/").status_code == 200


def test_repeated_wrong_passwords_lock_the_account_out(
    make_console_user: Callable[..., Any], tenant: Any
) -> None:
    user = make_console_user("viewer", tenant)
    client = Client()
    for _ in range(5):
        client.post("/console/login/", {"username": user.username, "password": "wrong"})
    locked = client.post(
        "/console/login/", {"username": user.username, "password": "correct horse 9"}
    )
    assert locked.status_code == 429
    assert "Too many failed sign-ins" in locked.content.decode()
    assert client.get("/console/").status_code == 302  # still not signed in


def test_a_user_without_membership_has_no_console(db: None) -> None:
    from django.contrib.auth import get_user_model

    client = Client()
    client.force_login(get_user_model().objects.create_user(username="nobody", password="x"))
    assert client.get("/console/").status_code == 403


def test_operator_pages_do_not_exist_for_tenant_users(
    admin_of: Callable[[Any], Client], tenant: Any
) -> None:
    from django.urls import reverse

    response = admin_of(tenant).post(reverse("console:pick_tenant"), {"tenant": ""})
    assert response.status_code == 404


def test_language_choice_sticks_to_the_user(
    make_console_user: Callable[..., Any], tenant: Any
) -> None:
    from switchboard.console.models import Membership

    user = make_console_user("viewer", tenant)
    client = Client()
    client.post("/console/login/", {"username": user.username, "password": "correct horse 9"})
    client.post("/console/language/", {"language": "zh-hans", "next": "/console/"})
    assert Membership.objects.get(user=user).language == "zh-hans"
    # A fresh sign-in elsewhere (no cookie) gets the saved language back.
    other = Client()
    other.post("/console/login/", {"username": user.username, "password": "correct horse 9"})
    page = other.get("/console/")
    assert page["Content-Language"] == "zh-hans"
    assert '<html lang="zh-hans">' in page.content.decode()


def test_console_user_command_creates_and_changes_roles(tenant: Any) -> None:
    from io import StringIO

    from django.core.management import CommandError, call_command

    from switchboard.console.models import Membership

    out = StringIO()
    call_command(
        "console_user",
        "alice",
        "--role",
        "admin",
        "--tenant",
        tenant.slug,
        "--password",
        "pw-123456",
        stdout=out,
    )
    assert "created alice: admin" in out.getvalue()
    call_command("console_user", "alice", "--role", "operator", stdout=out)
    membership = Membership.objects.get(user__username="alice")
    assert (membership.role, membership.tenant) == ("operator", None)
    with pytest.raises(CommandError, match="--tenant is required"):
        call_command("console_user", "bob", "--role", "viewer", "--password", "x")
