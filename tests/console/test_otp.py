"""Two-factor sign-in: turning it on and off, and the code asked for after the password."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse 9"


@pytest.fixture
def no_throttle(settings: Any) -> None:
    # A wrong code locks the device for a second; tests that go on to a right one at once
    # would otherwise be told to wait.
    settings.OTP_TOTP_THROTTLE_FACTOR = 0


def code(device: Any) -> str:
    from django_otp.oath import totp

    value = totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits)
    return f"{value:0{device.digits}d}"


def wrong_code(device: Any) -> str:
    # The device takes the codes of the neighbouring time steps too; an arbitrary number
    # could be one of them, one digit off the current code practically never is.
    right = code(device)
    return right[:-1] + str((int(right[-1]) + 5) % 10)


def make_device(user: Any, *, confirmed: bool = True) -> Any:
    from django_otp.plugins.otp_totp.models import TOTPDevice

    return TOTPDevice.objects.create(user=user, name="phone", confirmed=confirmed)


def password_client(user: Any) -> Client:
    """Signed in with the password only, as the login page does it."""
    client = Client()
    response = client.post("/console/login/", {"username": user.username, "password": PASSWORD})
    assert response.status_code == 302
    return client


def verified_client(user: Any, device: Any) -> Client:
    """Signed in and past the second step, without spending a code on it."""
    from django_otp import DEVICE_ID_SESSION_KEY

    client = Client()
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return client


def test_turning_on_with_a_correct_code_confirms_the_device(
    make_console_user: Callable[..., Any], tenant: Any
) -> None:
    from django_otp import user_has_device
    from django_otp.plugins.otp_totp.models import TOTPDevice

    user = make_console_user("viewer", tenant)
    client = password_client(user)
    page = client.get("/console/otp/")
    assert page.status_code == 200
    assert "Two-factor sign-in is off." in page.content.decode()

    assert client.post("/console/otp/enable/").status_code == 302
    device = TOTPDevice.objects.get(user=user)
    assert not device.confirmed
    assert not user_has_device(user)  # an unfinished set-up asks nothing at sign-in
    setup = client.get("/console/otp/")
    html = setup.content.decode()
    assert "<svg" in html
    assert setup["Cache-Control"].startswith("max-age=0")
    from base64 import b32encode

    assert b32encode(device.bin_key).decode() in html

    response = client.post("/console/otp/confirm/", {"token": code(device)})
    assert response.status_code == 302
    device.refresh_from_db()
    assert device.confirmed
    # Having just given a code, this session is verified already.
    assert client.get("/console/").status_code == 200
    assert "Two-factor sign-in is on." in client.get("/console/otp/").content.decode()


def test_turning_on_again_replaces_an_unfinished_secret(
    make_console_user: Callable[..., Any], tenant: Any
) -> None:
    from django_otp.plugins.otp_totp.models import TOTPDevice

    user = make_console_user("viewer", tenant)
    client = password_client(user)
    client.post("/console/otp/enable/")
    first = TOTPDevice.objects.get(user=user).key
    client.post("/console/otp/enable/")
    assert list(TOTPDevice.objects.filter(user=user).values_list("key", flat=True)) != [first]
    assert TOTPDevice.objects.filter(user=user).count() == 1
    client.post("/console/otp/cancel/")
    assert not TOTPDevice.objects.filter(user=user).exists()


def test_a_wrong_code_does_not_turn_it_on(
    make_console_user: Callable[..., Any], tenant: Any, no_throttle: None
) -> None:
    from django_otp.plugins.otp_totp.models import TOTPDevice

    user = make_console_user("viewer", tenant)
    client = password_client(user)
    client.post("/console/otp/enable/")
    device = TOTPDevice.objects.get(user=user)
    response = client.post("/console/otp/confirm/", {"token": wrong_code(device)})
    assert response.status_code == 200
    assert "That code is not right." in response.content.decode()
    device.refresh_from_db()
    assert not device.confirmed
    not_a_code = client.post("/console/otp/confirm/", {"token": "12ab"})
    assert "6-digit code" in not_a_code.content.decode()


def test_a_user_with_a_device_gives_a_code_after_the_password(
    make_console_user: Callable[..., Any], tenant: Any
) -> None:
    user = make_console_user("viewer", tenant)
    device = make_device(user)
    client = password_client(user)

    response = client.get("/console/bots/?page=2")
    assert response.status_code == 302
    assert response["Location"] == "/console/otp/verify/?next=%2Fconsole%2Fbots%2F%3Fpage%3D2"
    assert client.get("/console/").status_code == 302
    page = client.get(response["Location"])
    assert page.status_code == 200
    assert 'name="next" value="/console/bots/?page=2"' in page.content.decode()

    done = client.post(
        "/console/otp/verify/", {"token": code(device), "next": "/console/bots/?page=2"}
    )
    assert done.status_code == 302
    assert done["Location"] == "/console/bots/?page=2"
    assert client.get("/console/").status_code == 200


def test_a_wrong_code_keeps_the_user_out_and_is_throttled(
    make_console_user: Callable[..., Any], tenant: Any, settings: Any
) -> None:
    # A wide window, so that a slow machine does not outlast it between two requests.
    settings.OTP_TOTP_THROTTLE_FACTOR = 60
    user = make_console_user("viewer", tenant)
    device = make_device(user)
    client = password_client(user)

    wrong = client.post("/console/otp/verify/", {"token": wrong_code(device)})
    assert wrong.status_code == 200
    assert "That code is not right." in wrong.content.decode()
    assert client.get("/console/").status_code == 302

    # Even the right code waits out the back-off.
    throttled = client.post("/console/otp/verify/", {"token": code(device)})
    assert "Verification temporarily disabled because of 1 failed attempt" in (
        throttled.content.decode()
    )
    assert client.get("/console/").status_code == 302


def test_users_without_a_device_go_straight_in(
    make_console_user: Callable[..., Any], tenant: Any
) -> None:
    user = make_console_user("admin", tenant)
    make_device(user, confirmed=False)  # started setting up, never finished
    client = password_client(user)
    assert client.get("/console/").status_code == 200
    # Nothing to verify: the page sends them on.
    response = client.get("/console/otp/verify/?next=/console/bots/")
    assert (response.status_code, response["Location"]) == (302, "/console/bots/")


def test_verify_goes_on_only_to_this_site(
    make_console_user: Callable[..., Any], tenant: Any
) -> None:
    user = make_console_user("viewer", tenant)
    device = make_device(user)
    client = password_client(user)
    response = client.post(
        "/console/otp/verify/", {"token": code(device), "next": "https://evil.example/"}
    )
    assert (response.status_code, response["Location"]) == (302, "/console/")


def test_verify_needs_a_password_sign_in_first() -> None:
    response = Client().get("/console/otp/verify/")
    assert response.status_code == 302
    assert response["Location"].startswith("/console/login/")


def test_turning_off_needs_a_valid_code(
    make_console_user: Callable[..., Any], tenant: Any, no_throttle: None
) -> None:
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    user = make_console_user("viewer", tenant)
    device = make_device(user)
    client = verified_client(user, device)
    assert "Two-factor sign-in is on." in client.get("/console/otp/").content.decode()

    assert client.post("/console/otp/disable/", {"token": ""}).status_code == 200
    refused = client.post("/console/otp/disable/", {"token": wrong_code(device)})
    assert "That code is not right." in refused.content.decode()
    assert TOTPDevice.objects.filter(pk=device.pk).exists()

    response = client.post("/console/otp/disable/", {"token": code(device)})
    assert response.status_code == 302
    assert not TOTPDevice.objects.filter(user=user).exists()
    assert DEVICE_ID_SESSION_KEY not in client.session
    # A later password-only sign-in goes straight in.
    assert password_client(user).get("/console/").status_code == 200


def test_an_unverified_session_cannot_manage_two_factor(
    make_console_user: Callable[..., Any], tenant: Any
) -> None:
    from django_otp.plugins.otp_totp.models import TOTPDevice

    user = make_console_user("viewer", tenant)
    device = make_device(user)
    client = password_client(user)
    responses = [
        client.get("/console/otp/"),
        client.post("/console/otp/disable/", {"token": code(device)}),
        client.post("/console/otp/enable/"),
    ]
    for response in responses:
        assert response.status_code == 302
        assert response["Location"].startswith("/console/otp/verify/")
    assert TOTPDevice.objects.filter(pk=device.pk, confirmed=True).exists()


def test_another_users_device_is_never_touched(
    make_console_user: Callable[..., Any], tenant: Any, other_tenant: Any, no_throttle: None
) -> None:
    from django_otp.plugins.otp_totp.models import TOTPDevice

    alice = make_console_user("admin", tenant)
    bob = make_console_user("operator")
    alice_device = make_device(alice)
    bob_device = make_device(bob)
    bob_pending = make_device(make_console_user("viewer", other_tenant), confirmed=False)

    # Bob's code does not get Alice past the second step.
    client = password_client(alice)
    client.post("/console/otp/verify/", {"token": code(bob_device)})
    assert client.get("/console/").status_code == 302

    client = verified_client(alice, alice_device)
    client.post("/console/otp/enable/")
    client.post("/console/otp/cancel/")
    client.post("/console/otp/disable/", {"token": code(bob_device)})
    assert TOTPDevice.objects.filter(pk=alice_device.pk).exists()
    client.post("/console/otp/disable/", {"token": code(alice_device)})
    assert not TOTPDevice.objects.filter(user=alice).exists()
    assert TOTPDevice.objects.filter(pk=bob_device.pk, confirmed=True).exists()
    assert TOTPDevice.objects.filter(pk=bob_pending.pk).exists()


def test_no_way_around_the_second_factor(
    make_console_user: Callable[..., Any], tenant: Any
) -> None:
    """Password change and the Django admin ask for the code too."""
    from django.contrib.auth import get_user_model

    user = make_console_user("admin", tenant)
    get_user_model().objects.filter(pk=user.pk).update(is_staff=True, is_superuser=True)
    device = make_device(user)
    client = password_client(user)
    for path in ("/console/password/", "/admin/"):
        response = client.get(path, follow=True)
        # (The admin goes through its own login page first, which sends it on.)
        assert response.redirect_chain[-1][0].startswith("/console/otp/verify/"), path
    verified = verified_client(user, device)
    assert verified.get("/console/password/").status_code == 200
    assert verified.get("/admin/").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_test_chat_socket_refuses_a_session_without_the_second_factor(
    make_console_user: Callable[..., Any], tenant: Any
) -> None:
    from asgiref.sync import async_to_sync

    from switchboard.console.consumers import ChatConsumer

    user = make_console_user("admin", tenant)
    make_device(user)
    consumer = ChatConsumer()
    consumer.scope = {"user": user, "session": {}}
    assert async_to_sync(consumer._access)() is None
