"""Stripe- and GitHub-profile webhook connectors at the ingress, over real HTTP.

Authentic requests are stored and queued once; forged, stale, malformed or unsigned ones
are a 401 JSON error that changes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from connectors.webhook import Profile, sign, sign_headers
from switchboard.bots.models import Connector
from switchboard.conversations.models import Message
from tests.support import ingress

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("purge_queues")]

GOOD = {"message_id": "evt-1", "user_id": "u-1", "text": "hello", "conversation_id": "c-1"}
BODY = json.dumps(GOOD)
OTHER_SECRET = "whsec_not-the-connector-secret"

Post = Callable[[Connector, str, dict[str, str]], httpx.Response]


@pytest.fixture
def post(live_server: Any) -> Post:
    def send(connector: Connector, body: str, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(
            f"{live_server.url}/hooks/webhook/{connector.pk}/",
            content=body.encode(),
            headers={"content-type": "application/json", **headers},
            timeout=30,
        )

    return send


def _connector(bot: Any, profile: Profile) -> Connector:
    from switchboard.bots.services import connector_create_webhook

    connector = connector_create_webhook(bot=bot, name=f"{profile} sender")
    connector.verification_profile = profile
    connector.save(update_fields=["verification_profile"])
    return connector


@pytest.fixture
def stripe_connector(bot: Any) -> Connector:
    return _connector(bot, Profile.STRIPE)


@pytest.fixture
def github_connector(bot: Any) -> Connector:
    return _connector(bot, Profile.GITHUB)


def assert_stored_and_queued(response: httpx.Response, queued_tasks: Callable[[], int]) -> Message:
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["message_id"] == "evt-1" and answer["duplicate"] is False
    message = Message.objects.get(pk=answer["id"])
    assert (message.direction, message.status, message.text) == ("in", "received", "hello")
    assert message.conversation.external_key == "conv:c-1"
    assert queued_tasks() == 1
    return message


def assert_refused(
    response: httpx.Response, mentions: str, queued_tasks: Callable[[], int]
) -> None:
    ingress.assert_refused(response, 401, "invalid_signature", mentions, queued_tasks)


# --- Stripe -----------------------------------------------------------------------------


def test_stripe_signed_message_is_accepted_and_stored(stripe_connector, post, queued_tasks):
    headers = sign(Profile.STRIPE, secret=stripe_connector.secret, body=BODY, event_id="evt-1")
    assert_stored_and_queued(post(stripe_connector, BODY, headers), queued_tasks)


def test_stripe_header_with_a_rotated_out_signature_first_is_accepted(
    stripe_connector, post, queued_tasks
):
    good = sign(Profile.STRIPE, secret=stripe_connector.secret, body=BODY, event_id="evt-1")
    stale_sig = sign(Profile.STRIPE, secret=OTHER_SECRET, body=BODY, event_id="evt-1")
    t, v1 = good["Stripe-Signature"].split(",")
    other_v1 = stale_sig["Stripe-Signature"].split(",")[1]
    header = {"Stripe-Signature": f"{t},{other_v1},{v1},v0=ignored"}
    assert_stored_and_queued(post(stripe_connector, BODY, header), queued_tasks)


def test_stripe_signature_made_with_another_secret_is_401(stripe_connector, post, queued_tasks):
    headers = sign(Profile.STRIPE, secret=OTHER_SECRET, body=BODY, event_id="evt-1")
    assert_refused(post(stripe_connector, BODY, headers), "does not match", queued_tasks)


def test_stripe_body_changed_after_signing_is_401(stripe_connector, post, queued_tasks):
    headers = sign(Profile.STRIPE, secret=stripe_connector.secret, body=BODY, event_id="evt-1")
    tampered = json.dumps({**GOOD, "text": "refund everything"})
    assert_refused(post(stripe_connector, tampered, headers), "does not match", queued_tasks)


def test_stripe_timestamp_older_than_300_seconds_is_401(stripe_connector, post, queued_tasks):
    headers = sign(
        Profile.STRIPE,
        secret=stripe_connector.secret,
        body=BODY,
        event_id="evt-1",
        now=time.time() - 400,
    )
    assert_refused(post(stripe_connector, BODY, headers), "older than the 300 s", queued_tasks)


@pytest.mark.parametrize(
    "header, mentions",
    [
        ("garbage", "malformed"),
        ("t=yesterday,v1=abcdef", "not a unix time"),
        ("t=1700000000", "no v1= signature"),
        ("v1=abcdef", "no t= timestamp"),
        ("t=1,t=2,v1=abcdef", "more than one t="),
    ],
)
def test_stripe_malformed_signature_header_is_401(
    stripe_connector, post, queued_tasks, header, mentions
):
    response = post(stripe_connector, BODY, {"Stripe-Signature": header})
    assert_refused(response, mentions, queued_tasks)


def test_stripe_missing_signature_header_is_401(stripe_connector, post, queued_tasks):
    assert_refused(post(stripe_connector, BODY, {}), "missing Stripe-Signature", queued_tasks)


def test_stripe_connector_refuses_standard_webhooks_headers(stripe_connector, post, queued_tasks):
    # Valid for the standard profile with the same secret, but not what this connector checks.
    headers = sign_headers(secret=stripe_connector.secret, event_id="msg_1", body=BODY)
    assert_refused(post(stripe_connector, BODY, headers), "missing Stripe-Signature", queued_tasks)


# --- GitHub -----------------------------------------------------------------------------


def test_github_signed_message_is_accepted_and_stored(github_connector, post, queued_tasks):
    headers = sign(Profile.GITHUB, secret=github_connector.secret, body=BODY, event_id="d-1")
    assert_stored_and_queued(post(github_connector, BODY, headers), queued_tasks)


def test_github_signature_made_with_another_secret_is_401(github_connector, post, queued_tasks):
    headers = sign(Profile.GITHUB, secret=OTHER_SECRET, body=BODY, event_id="d-1")
    assert_refused(post(github_connector, BODY, headers), "does not match", queued_tasks)


def test_github_body_changed_after_signing_is_401(github_connector, post, queued_tasks):
    headers = sign(Profile.GITHUB, secret=github_connector.secret, body=BODY, event_id="d-1")
    tampered = json.dumps({**GOOD, "text": "delete the repo"})
    assert_refused(post(github_connector, tampered, headers), "does not match", queued_tasks)


@pytest.mark.parametrize("header", ["garbage", "sha1=abcdef", "sha256"])
def test_github_malformed_signature_header_is_401(github_connector, post, queued_tasks, header):
    response = post(github_connector, BODY, {"X-Hub-Signature-256": header})
    assert_refused(response, "malformed", queued_tasks)


def test_github_missing_signature_header_is_401(github_connector, post, queued_tasks):
    response = post(github_connector, BODY, {"X-GitHub-Delivery": "d-1"})
    assert_refused(response, "missing X-Hub-Signature-256", queued_tasks)


def test_github_legacy_sha1_signature_alone_is_401(github_connector, post, queued_tasks):
    import hashlib
    import hmac

    digest = hmac.new(github_connector.secret.encode(), BODY.encode(), hashlib.sha1).hexdigest()
    response = post(github_connector, BODY, {"X-Hub-Signature": f"sha1={digest}"})
    assert_refused(response, "legacy SHA-1", queued_tasks)


@pytest.mark.parametrize("delivery_id", ["d-1", "d-2-chosen-by-the-replayer"])
def test_github_replay_of_the_same_body_yields_one_message(
    github_connector, post, queued_tasks, delivery_id
):
    """Nothing time-bound is signed: the body's message_id is what stops a replay, whatever
    (unsigned) delivery id the replay carries."""
    first_headers = sign(Profile.GITHUB, secret=github_connector.secret, body=BODY, event_id="d-1")
    first = post(github_connector, BODY, first_headers)
    replay = post(github_connector, BODY, {**first_headers, "X-GitHub-Delivery": delivery_id})
    assert first.status_code == replay.status_code == 202, replay.text
    assert first.json()["duplicate"] is False
    assert replay.json()["duplicate"] is True
    assert replay.json()["id"] == first.json()["id"]
    assert Message.objects.filter(direction="in").count() == 1
    assert queued_tasks() == 1
