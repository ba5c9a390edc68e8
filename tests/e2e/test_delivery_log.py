"""The delivery log, the SSRF guard, auto-disable, replay and the sweeper, with a real
Celery worker process, the simulated model server and real HTTP receivers.

The worker runs with quick exponential retries and WITHOUT the installation-wide
private-callback switch: only connectors with `allow_private_callback` may reach the
loopback receivers these tests use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from connectors.base import DeliveryError
from switchboard.bots.models import Connector
from switchboard.conversations.models import Conversation, DeliveryAttempt, EndUser, Message
from tests.support import processes
from tests.support.receiver import Received
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TIMEOUT = 60
MAX_RETRIES = 2
DISABLE_AFTER = 2


class ScriptedReceiver:
    """A tenant endpoint that answers the scripted (status, body) pairs in order, then 200."""

    def __init__(self) -> None:
        self.script: list[tuple[int, str]] = []
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    status, text = receiver.script.pop(0) if receiver.script else (200, "thanks")
                    receiver.requests.append(
                        Received({k.lower(): v for k, v in self.headers.items()}, body, status)
                    )
                payload = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/callback"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.requests)


@pytest.fixture(scope="module")
def worker(
    django_db_setup: None, django_db_blocker: Any, worker_tmp: Path, redis_client: Any
) -> Iterator[None]:
    from django.conf import settings

    redis_client.delete("realtime", "chat", "default")
    database_url = processes.database_url_for(
        settings.DATABASE_URL, settings.DATABASES["default"]["NAME"]
    )
    with processes.celery_worker(
        worker_tmp,
        database_url=database_url,
        redis_url=settings.REDIS_URL,
        extra_env={
            "SWITCHBOARD_WEBHOOK_RETRY": "exponential",
            "SWITCHBOARD_CALLBACK_BACKOFF_BASE_S": "1",
            "SWITCHBOARD_CALLBACK_MAX_RETRIES": str(MAX_RETRIES),
            "SWITCHBOARD_CONNECTOR_DISABLE_AFTER": str(DISABLE_AFTER),
            # Not enabled: the worker must not inherit an installation-wide opt-out of
            # the SSRF guard from the environment the tests were started in.
            "SWITCHBOARD_ALLOW_PRIVATE_CALLBACKS": "false",
        },
    ):
        yield


@pytest.fixture
def scripted() -> Iterator[ScriptedReceiver]:
    with ScriptedReceiver() as r:
        yield r


@pytest.fixture
def trusted(bot: Any, scripted: ScriptedReceiver) -> Connector:
    """A connector an operator allowed to call back into the private network."""
    from switchboard.bots.services import connector_create_webhook

    return connector_create_webhook(
        bot=bot, name="Trusted", callback_url=scripted.url, allow_private_callback=True
    )


@pytest.fixture
def untrusted(bot: Any, scripted: ScriptedReceiver) -> Connector:
    """A tenant's connector whose callback URL points at loopback: the SSRF guard's case."""
    from switchboard.bots.services import connector_create_webhook

    return connector_create_webhook(bot=bot, name="Untrusted", callback_url=scripted.url)


def _reply_to(provider_message_id: str) -> Callable[[], Message | None]:
    return lambda: Message.objects.filter(
        direction="out", reply_to__provider_message_id=provider_message_id
    ).first()


def wait_for_reply_status(provider_message_id: str, status: str) -> Message:
    find = _reply_to(provider_message_id)

    def settled() -> Message | None:
        reply = find()
        return reply if reply is not None and reply.status == status else None

    return wait_until(settled, timeout=TIMEOUT, what=f"reply to {provider_message_id} {status}")


def attempts_of(reply: Message) -> list[DeliveryAttempt]:
    return list(DeliveryAttempt.objects.filter(message=reply).order_by("attempt"))


def send(post_webhook: Callable[..., httpx.Response], connector: Connector, mid: str) -> None:
    response = post_webhook(connector, {"message_id": mid, "user_id": "ann", "text": "status?"})
    assert response.status_code == 202, response.text


# --- the attempt log --------------------------------------------------------------------


def test_each_attempt_is_logged_with_status_excerpt_and_latency(
    worker, endpoint, trusted, scripted, post_webhook
):
    scripted.script = [(503, "upstream maintenance, back soon")]
    send(post_webhook, trusted, "log-1")

    reply = wait_for_reply_status("log-1", "delivered")
    first, second = attempts_of(reply)
    assert (first.attempt, first.outcome, first.http_status) == (1, "retrying", 503)
    assert first.response_excerpt == "upstream maintenance, back soon"
    assert "HTTP 503" in first.error
    assert (second.attempt, second.outcome, second.http_status) == (2, "delivered", 200)
    assert second.response_excerpt == "thanks" and second.error == ""
    for row in (first, second):
        assert row.via == "callback" and row.target == scripted.url
        assert row.connector_id == trusted.pk and row.tenant_id == trusted.tenant_id
        assert row.replay is False
        assert row.latency_ms is not None and row.latency_ms >= 0
    assert reply.attempts == 2 and reply.error == "" and reply.delivered_at is not None
    assert [r.answered for r in scripted.received()] == [503, 200]


def test_retries_used_up_leave_the_reply_undeliverable_and_the_last_attempt_failed(
    worker, endpoint, trusted, scripted, post_webhook
):
    scripted.script = [(503, "down")] * (MAX_RETRIES + 1)
    send(post_webhook, trusted, "exhaust-1")

    reply = wait_for_reply_status("exhaust-1", "undeliverable")
    rows = attempts_of(reply)
    assert [r.outcome for r in rows] == ["retrying"] * MAX_RETRIES + ["failed"]
    assert all(r.http_status == 503 for r in rows)
    assert len(scripted.received()) == MAX_RETRIES + 1
    trusted.refresh_from_db()
    # Transient failures are not the connector's fault: they do not count towards disabling.
    assert trusted.consecutive_permanent_failures == 0 and trusted.enabled
    assert "HTTP 503" in trusted.last_error


def test_receiver_answering_410_is_a_permanent_failure_without_retries(
    worker, endpoint, trusted, scripted, post_webhook
):
    scripted.script = [(410, "endpoint retired")]
    send(post_webhook, trusted, "gone-1")

    reply = wait_for_reply_status("gone-1", "undeliverable")
    (row,) = attempts_of(reply)
    assert (row.outcome, row.http_status, row.response_excerpt) == (
        "failed",
        410,
        "endpoint retired",
    )
    assert reply.attempts == 1 and "HTTP 410" in reply.error
    assert len(scripted.received()) == 1
    trusted.refresh_from_db()
    assert trusted.consecutive_permanent_failures == 1 and trusted.enabled


# --- SSRF guard and auto-disable --------------------------------------------------------


def test_loopback_callback_is_refused_by_the_ssrf_guard_without_any_request(
    worker, endpoint, untrusted, scripted, post_webhook
):
    send(post_webhook, untrusted, "ssrf-1")

    reply = wait_for_reply_status("ssrf-1", "undeliverable")
    (row,) = attempts_of(reply)
    assert row.outcome == "failed" and row.http_status is None
    assert "callback URL refused" in row.error and "loopback" in row.error
    assert row.target == scripted.url
    assert "callback URL refused" in reply.error
    assert scripted.received() == []
    untrusted.refresh_from_db()
    assert untrusted.enabled and untrusted.consecutive_permanent_failures == 1
    assert "callback URL refused" in untrusted.last_error


def test_permanent_failures_in_a_row_disable_the_connector_and_close_its_ingress(
    worker, endpoint, untrusted, scripted, post_webhook
):
    for index in range(DISABLE_AFTER):
        send(post_webhook, untrusted, f"dis-{index}")
        wait_for_reply_status(f"dis-{index}", "undeliverable")

    untrusted.refresh_from_db()
    assert untrusted.enabled is False
    assert f"disabled after {DISABLE_AFTER} permanent delivery failures" in untrusted.last_error
    assert "callback URL refused" in untrusted.last_error
    assert untrusted.last_error_at is not None
    assert scripted.received() == []

    response = post_webhook(untrusted, {"message_id": "after", "user_id": "ann", "text": "hi"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_connector"
    assert not Message.objects.filter(provider_message_id="after").exists()


def test_a_success_between_permanent_failures_resets_the_count(
    worker, endpoint, trusted, scripted, post_webhook
):
    scripted.script = [(410, "no"), (200, "ok"), (410, "no")]
    for mid, status in [("r-1", "undeliverable"), ("r-2", "delivered"), ("r-3", "undeliverable")]:
        send(post_webhook, trusted, mid)
        wait_for_reply_status(mid, status)
    trusted.refresh_from_db()
    assert trusted.enabled and trusted.consecutive_permanent_failures == 1


# --- replay and the sweeper -------------------------------------------------------------


def test_admin_replay_sends_the_reply_again_with_the_same_webhook_id(
    worker, endpoint, trusted, scripted, post_webhook, admin_client
):
    send(post_webhook, trusted, "replay-1")
    reply = wait_for_reply_status("replay-1", "delivered")
    inbound = reply.reply_to

    page = admin_client.post(
        reverse("admin:conversations_message_changelist"),
        {"action": "replay", "_selected_action": [str(reply.pk), str(inbound.pk)]},
        follow=True,
    )
    assert page.status_code == 200
    assert "1 of 2 message(s) queued again" in page.content.decode()

    replayed = wait_until(
        lambda: DeliveryAttempt.objects.filter(
            message=reply, replay=True, outcome="delivered"
        ).first(),
        timeout=TIMEOUT,
        what="the replayed delivery",
    )
    assert replayed.attempt == 2 and replayed.http_status == 200
    original, again = scripted.received()
    assert original.headers["webhook-id"] == again.headers["webhook-id"] == f"msg_{reply.pk.hex}"
    assert original.body == again.body
    assert Webhook(trusted.secret).verify(again.body, again.headers)["data"]["message_id"] == (
        "replay-1"
    )
    reply.refresh_from_db()
    assert reply.status == "delivered" and reply.attempts == 2
    # The inbound message was not replayed and nothing else was logged for it.
    assert not DeliveryAttempt.objects.filter(message=inbound).exists()


def _pending_reply(connector: Connector, mid: str, *, next_attempt_at: Any) -> Message:
    end_user, _ = EndUser.objects.get_or_create(
        tenant=connector.tenant, channel="webhook", external_id="sweep-user"
    )
    conversation, _ = Conversation.objects.get_or_create(
        tenant=connector.tenant,
        bot=connector.bot,
        connector=connector,
        end_user=end_user,
        external_key="user:sweep-user",
    )
    inbound = Message.objects.create(
        tenant=connector.tenant,
        conversation=conversation,
        connector=connector,
        direction="in",
        text="anyone?",
        provider_message_id=mid,
        status="replied",
    )
    reply = Message.objects.create(
        tenant=connector.tenant,
        conversation=conversation,
        connector=connector,
        direction="out",
        text=f"answer to {mid}",
        status="pending",
        reply_to=inbound,
        attempts=1,
        error="callback answered HTTP 503",
    )
    long_ago = timezone.now() - timedelta(hours=1)
    Message.objects.filter(pk=reply.pk).update(created_at=long_ago, next_attempt_at=next_attempt_at)
    return reply


def test_sweeper_requeues_a_pending_delivery_whose_retry_was_lost(
    worker, trusted, scripted, purge_queues
):
    from switchboard.conversations.tasks import requeue_stalled_messages

    now = timezone.now()
    # Its retry was due 50 minutes ago and never ran: the delayed task was lost.
    lost = _pending_reply(trusted, "lost-1", next_attempt_at=now - timedelta(minutes=50))
    # Its retry is still scheduled: the sweeper must leave it to the broker.
    scheduled = _pending_reply(trusted, "waiting-1", next_attempt_at=now + timedelta(hours=1))

    counts = requeue_stalled_messages.apply().get()
    assert counts["deliveries"] == 1

    delivered = wait_for_reply_status("lost-1", "delivered")
    assert delivered.pk == lost.pk and delivered.next_attempt_at is None
    (row,) = attempts_of(delivered)
    assert (row.attempt, row.outcome, row.replay) == (2, "delivered", False)
    (request,) = scripted.received()
    assert request.headers["webhook-id"] == f"msg_{lost.pk.hex}"
    scheduled.refresh_from_db()
    assert scheduled.status == "pending" and scheduled.attempts == 1


# --- the retry policy, unit level (no worker) --------------------------------------------


def _reply_on(connector: Connector) -> Message:
    return _pending_reply(connector, f"unit-{connector.pk.hex[:6]}", next_attempt_at=None)


@override_settings(SWITCHBOARD_WEBHOOK_RETRY="standard", SWITCHBOARD_CALLBACK_MAX_RETRIES=2)
def test_standard_retry_countdowns_follow_the_standard_webhooks_schedule(connector):
    from connectors.webhook import schedule
    from switchboard.conversations.tasks import _delivery_delay

    reply = _reply_on(connector)
    error = DeliveryError("callback answered HTTP 503", permanent=False, status_code=503)
    spec = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
    assert spec == schedule.RETRY_SCHEDULE_S
    # Well past SWITCHBOARD_CALLBACK_MAX_RETRIES: that cap is for the exponential policy.
    for retries, base in enumerate(spec):
        delay = _delivery_delay(retries, error, str(reply.pk))
        assert delay is not None and base * 0.9 <= delay <= base * 1.1, (retries, delay)
    assert _delivery_delay(len(spec), error, str(reply.pk)) is None


@override_settings(SWITCHBOARD_WEBHOOK_RETRY="exponential", SWITCHBOARD_CALLBACK_MAX_RETRIES=2)
def test_exponential_retry_countdowns_are_capped_backoff(connector):
    from switchboard.conversations.tasks import _delivery_delay

    reply = _reply_on(connector)
    error = DeliveryError("callback answered HTTP 503", permanent=False)
    with override_settings(SWITCHBOARD_CALLBACK_BACKOFF_BASE_S=1):
        for retries in range(2):
            delay = _delivery_delay(retries, error, str(reply.pk))
            assert delay is not None and 0 <= delay <= 2**retries
        assert _delivery_delay(2, error, str(reply.pk)) is None


@override_settings(
    SWITCHBOARD_WEBHOOK_RETRY="standard",
    SWITCHBOARD_CALLBACK_BACKOFF_BASE_S=1,
    SWITCHBOARD_CALLBACK_MAX_RETRIES=3,
)
def test_dingtalk_retry_after_wins_over_a_shorter_backoff(bot):
    from switchboard.bots.services import connector_create_dingtalk
    from switchboard.conversations.tasks import _delivery_delay

    dingtalk = connector_create_dingtalk(bot=bot, name="DT", app_key="k", app_secret="s")
    reply = _reply_on(dingtalk)
    throttled = DeliveryError("throttled", permanent=False, retry_after_s=42.0)
    # Backoff with base 1 s is at most 1, 2, 4 s here; DingTalk asked for 42 s.
    for retries in range(3):
        assert _delivery_delay(retries, throttled, str(reply.pk)) == 42.0
    # The webhook schedule is for webhook connectors only; DingTalk's retries still end.
    assert _delivery_delay(3, throttled, str(reply.pk)) is None


# --- the log in the admin (no worker) ----------------------------------------------------


def test_delivery_log_is_read_only_in_the_admin(admin_client, connector):
    reply = _pending_reply(connector, "admin-log", next_attempt_at=None)
    row = DeliveryAttempt.objects.create(
        tenant=connector.tenant,
        message=reply,
        connector=connector,
        attempt=1,
        outcome="retrying",
        via="callback",
        http_status=503,
        response_excerpt="maintenance window",
        error="callback answered HTTP 503",
    )
    change = reverse("admin:conversations_deliveryattempt_change", args=[row.pk])
    page = admin_client.get(change)
    assert page.status_code == 200
    assert "maintenance window" in page.content.decode()
    assert 'name="_save"' not in page.content.decode()
    assert admin_client.post(change, {"outcome": "delivered"}).status_code == 403
    assert admin_client.get(reverse("admin:conversations_deliveryattempt_add")).status_code == 403
    row.refresh_from_db()
    assert row.outcome == "retrying"
    # The message's page lists its attempts.
    message_page = admin_client.get(reverse("admin:conversations_message_change", args=[reply.pk]))
    assert "maintenance window" in message_page.content.decode()
