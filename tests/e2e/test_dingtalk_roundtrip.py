"""DingTalk HTTP-callback messages through real processes: the live server's ingress, a
Celery worker process, the simulated vLLM endpoint, and the fake DingTalk for DingTalk's
side (session webhooks, access tokens, the robot OpenAPI; PROTOCOLS.md §A.4, §B.6, §C)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from switchboard.conversations.models import DeliveryAttempt, Message
from tests.support import processes
from tests.support.dingtalk_fixtures import (
    callback_for,
    create_dingtalk_connector,
    post_callback,
    session_token,
)
from tests.support.fake_dingtalk import FakeDingTalk, Sent
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TIMEOUT = 60
DISABLE_AFTER = 2
MAX_RETRIES = 3
# Inside WEBHOOK_SAFETY_MARGIN_MS: the sender must not trust this session webhook.
EXPIRED_WEBHOOK = {"webhook_ttl_ms": 0}
Post = Callable[..., tuple[httpx.Response, dict[str, Any]]]


@pytest.fixture(scope="module")
def ding() -> Iterator[FakeDingTalk]:
    with FakeDingTalk() as fake:
        yield fake


@pytest.fixture(scope="module")
def worker(
    ding: FakeDingTalk,
    django_db_setup: None,
    django_db_blocker: Any,
    tmp_path_factory: pytest.TempPathFactory,
    redis_client: Any,
) -> Iterator[None]:
    from django.conf import settings

    redis_client.delete("realtime", "chat", "default")
    database_url = processes.database_url_for(
        settings.DATABASE_URL, settings.DATABASES["default"]["NAME"]
    )
    with processes.celery_worker(
        tmp_path_factory.mktemp("dingtalk-worker"),
        database_url=database_url,
        redis_url=settings.REDIS_URL,
        extra_env={
            "SWITCHBOARD_DINGTALK_API_BASE": ding.base_url,
            "SWITCHBOARD_DINGTALK_SESSION_WEBHOOK_PREFIXES": f"{ding.base_url}/",
            "SWITCHBOARD_DINGTALK_PACE_MS": "200",
            "SWITCHBOARD_CALLBACK_BACKOFF_BASE_S": "1",
            "SWITCHBOARD_CALLBACK_MAX_RETRIES": str(MAX_RETRIES),
            "SWITCHBOARD_CONNECTOR_DISABLE_AFTER": str(DISABLE_AFTER),
        },
    ):
        yield


@pytest.fixture(autouse=True)
def _fresh_fake(ding: FakeDingTalk) -> None:
    ding.reset()


@pytest.fixture
def dingtalk(bot: Any, ding: FakeDingTalk) -> Any:
    # Its own app key: the worker's access-token cache outlives each test.
    return create_dingtalk_connector(bot, ding, own_app=True)


@pytest.fixture
def post(live_server: Any, dingtalk: Any, ding: FakeDingTalk) -> Post:
    """Sign a callback for the connector, POST it, and return it with the response."""

    def send(**kw: Any) -> tuple[httpx.Response, dict[str, Any]]:
        headers, body = callback_for(dingtalk, ding, **kw)
        response = post_callback(live_server.url, str(dingtalk.pk), headers, body)
        assert response.status_code == 200, response.text
        assert response.json() == {"msgtype": "empty"}
        return response, json.loads(body)

    return send


def reply_to(msg_id: str, status: str) -> Message:
    return wait_until(
        lambda: Message.objects.filter(
            direction="out", reply_to__provider_message_id=msg_id, status=status
        ).first(),
        timeout=TIMEOUT,
        what=f"the reply to {msg_id} to be {status}",
    )


def attempts_of(reply: Message) -> list[DeliveryAttempt]:
    return list(DeliveryAttempt.objects.filter(message=reply).order_by("attempt"))


def inference_work(simulator_url: str) -> float:
    """Prompt tokens processed plus requests finished by the simulator, ever."""
    metrics = httpx.get(f"{simulator_url}/metrics", timeout=10, trust_env=False).text
    families = ("vllm:prompt_tokens_total", "vllm:request_success_total")
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(families)
    )


def test_direct_message_is_answered_through_its_session_webhook(
    worker: None, endpoint: Any, post: Post, ding: FakeDingTalk
) -> None:
    _, body = post(text="今天天气怎么样")

    sent = ding.wait_for_sent(1, timeout=TIMEOUT)[0]
    assert sent.via == "session_webhook"
    assert sent.session == session_token(body)
    assert sent.msgtype == "text"
    assert "simulated" in sent.text and "You said: 今天天气怎么样" in sent.text
    assert sent.at_user_ids == []  # nobody to single out in a 1:1 chat

    reply = reply_to(body["msgId"], "delivered")
    assert reply.text.strip() == sent.text
    assert reply.prompt_tokens > 0 and reply.completion_tokens > 0
    assert reply.endpoint_id == endpoint.pk
    [attempt] = attempts_of(reply)
    assert (attempt.attempt, attempt.via, attempt.outcome) == (1, "session_webhook", "delivered")
    assert Message.objects.get(direction="in").status == "replied"
    assert ding.token_calls == 0


def test_group_reply_mentions_the_asker(
    worker: None, endpoint: Any, post: Post, ding: FakeDingTalk
) -> None:
    _, body = post(text="谁负责这个项目？", conversation_type="2", sender_staff_id="staff-g7")

    sent = ding.wait_for_sent(1, timeout=TIMEOUT)[0]
    assert sent.via == "session_webhook"
    assert sent.at_user_ids == ["staff-g7"]
    assert "You said: 谁负责这个项目？" in sent.text
    reply = reply_to(body["msgId"], "delivered")
    assert reply.conversation.external_key == f"group:{body['conversationId']}"


def test_markdown_bot_replies_in_markdown_with_the_mention_in_the_text(
    worker: None, endpoint: Any, bot: Any, post: Post, ding: FakeDingTalk
) -> None:
    bot.reply_format = "markdown"
    bot.save()
    _, body = post(text="总结一下", conversation_type="2", sender_staff_id="staff-md")

    sent = ding.wait_for_sent(1, timeout=TIMEOUT)[0]
    assert sent.msgtype == "markdown"
    assert sent.title == bot.name
    assert sent.text.startswith("@staff-md ") and "You said: 总结一下" in sent.text
    assert sent.at_user_ids == ["staff-md"]
    reply_to(body["msgId"], "delivered")


def test_expired_session_webhook_falls_back_to_the_openapi_sharing_one_token(
    worker: None, endpoint: Any, dingtalk: Any, post: Post, ding: FakeDingTalk
) -> None:
    _, direct = post(text="one", sender_staff_id="staff-oto", **EXPIRED_WEBHOOK)
    _, group = post(
        text="two", conversation_type="2", conversation_id="cidOPENAPI==", **EXPIRED_WEBHOOK
    )

    sent = ding.wait_for_sent(2, timeout=TIMEOUT)
    by_via: dict[str, Sent] = {s.via: s for s in sent}
    assert set(by_via) == {"oto", "group"}
    assert by_via["oto"].body["userIds"] == ["staff-oto"]
    assert by_via["oto"].body["robotCode"] == dingtalk.robot_code
    assert "You said: one" in by_via["oto"].text
    assert by_via["group"].body["openConversationId"] == "cidOPENAPI=="
    assert by_via["group"].body["robotCode"] == dingtalk.robot_code
    assert "You said: two" in by_via["group"].text
    assert ding.token_calls == 1
    assert by_via["oto"].token == by_via["group"].token
    assert not [r for r in ding.requests if r[0] == "session_webhook"]

    for body in (direct, group):
        [attempt] = attempts_of(reply_to(body["msgId"], "delivered"))
        assert (attempt.via, attempt.outcome) == ("openapi", "delivered")


@pytest.mark.parametrize("msgtype", ["picture", "file"])
def test_unreadable_message_gets_the_canned_reply_without_inference(
    worker: None,
    endpoint: Any,
    bot: Any,
    post: Post,
    ding: FakeDingTalk,
    simulator_url: str,
    msgtype: str,
) -> None:
    before = inference_work(simulator_url)
    _, body = post(msgtype=msgtype)

    sent = ding.wait_for_sent(1, timeout=TIMEOUT)[0]
    assert sent.via == "session_webhook"
    assert sent.text == bot.unsupported_message_reply
    reply = reply_to(body["msgId"], "delivered")
    assert reply.finish_reason == "canned"
    assert (reply.prompt_tokens, reply.completion_tokens, reply.endpoint_id) == (None, None, None)
    inbound = Message.objects.get(direction="in")
    assert (inbound.status, inbound.attempts, inbound.claimed_at) == ("replied", 0, None)
    assert inference_work(simulator_url) == before


def test_throttled_session_webhook_retry_waits_for_dingtalks_hint(
    worker: None, endpoint: Any, post: Post, ding: FakeDingTalk
) -> None:
    """130101 "send too fast" asks for a minute: the retry is scheduled no sooner."""
    from connectors.dingtalk import THROTTLE_RETRY_AFTER_S

    ding.throttle_session_webhook(times=1)
    _, body = post(text="快一点")

    reply = wait_until(
        lambda: (
            Message.objects.filter(direction="out", reply_to__provider_message_id=body["msgId"])
            .exclude(next_attempt_at=None)
            .first()
        ),
        timeout=TIMEOUT,
        what="the throttled delivery to be rescheduled",
    )
    [attempt] = attempts_of(reply)
    assert (attempt.outcome, attempt.via) == ("retrying", "session_webhook")
    assert "130101" in attempt.error
    assert reply.status == "pending" and "130101" in reply.error
    assert reply.next_attempt_at - attempt.created_at >= timedelta(seconds=THROTTLE_RETRY_AFTER_S)
    assert ding.sent == []


def test_throttled_session_webhook_is_retried_after_retry_after_and_delivered(
    worker: None, endpoint: Any, post: Post, ding: FakeDingTalk
) -> None:
    ding.fail_http("session_webhook", 429, retry_after="2")
    _, body = post(text="再试一次")

    reply = reply_to(body["msgId"], "delivered")
    throttled, delivered = attempts_of(reply)
    assert (throttled.attempt, throttled.outcome, throttled.http_status) == (1, "retrying", 429)
    assert (delivered.attempt, delivered.outcome) == (2, "delivered")
    assert delivered.created_at - throttled.created_at >= timedelta(seconds=2)
    assert reply.attempts == 2 and reply.next_attempt_at is None and reply.error == ""
    assert [s.via for s in ding.sent] == ["session_webhook"]
    assert ding.requests == [("session_webhook", 429), ("session_webhook", 200)]


def test_stopped_bot_makes_replies_undeliverable_then_disables_the_connector(
    worker: None, endpoint: Any, dingtalk: Any, post: Post, ding: FakeDingTalk, live_server: Any
) -> None:
    ding.stop_bot(dingtalk.robot_code)

    _, first = post(text="有人吗", sender_staff_id="staff-stop", **EXPIRED_WEBHOOK)
    reply = reply_to(first["msgId"], "undeliverable")
    [attempt] = attempts_of(reply)
    assert (attempt.via, attempt.outcome, attempt.http_status) == ("openapi", "failed", 400)
    assert "bot.stopped" in attempt.error and "bot.stopped" in reply.error
    dingtalk.refresh_from_db()
    assert dingtalk.enabled
    assert dingtalk.consecutive_permanent_failures == 1
    assert "bot.stopped" in dingtalk.last_error and dingtalk.last_error_at is not None

    _, second = post(text="还在吗", sender_staff_id="staff-stop", **EXPIRED_WEBHOOK)
    reply_to(second["msgId"], "undeliverable")
    dingtalk.refresh_from_db()
    assert dingtalk.consecutive_permanent_failures == DISABLE_AFTER
    assert not dingtalk.enabled
    assert f"disabled after {DISABLE_AFTER}" in dingtalk.last_error
    assert ding.sent == []

    headers, body = callback_for(dingtalk, ding, text="hello?")
    refused = post_callback(live_server.url, str(dingtalk.pk), headers, body)
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "unknown_connector"


def test_dingtalk_retry_of_the_same_message_is_answered_once(
    worker: None, endpoint: Any, post: Post, ding: FakeDingTalk
) -> None:
    msg_id = "msgRETRYe2e0001=="
    post(text="只回答一次", msg_id=msg_id)
    post(text="只回答一次", msg_id=msg_id)  # DingTalk retried before the answer came

    reply = reply_to(msg_id, "delivered")
    post(text="只回答一次", msg_id=msg_id)  # and once more after it

    # The retries were refused at the door, so nothing else is queued or in flight.
    assert Message.objects.filter(direction="in").count() == 1
    assert Message.objects.filter(direction="out").count() == 1
    assert len(attempts_of(reply)) == 1
    assert len(ding.sent) == 1 and "You said: 只回答一次" in ding.sent[0].text


def test_reply_held_back_by_pacing_still_gets_every_retry(
    worker: None, endpoint: Any, post: Post, ding: FakeDingTalk, redis_client: Any
) -> None:
    """Waiting for the conversation's turn is not a failed attempt: a paced reply keeps
    its whole retry budget (SWITCHBOARD_CALLBACK_MAX_RETRIES) for real failures."""
    from django.utils import timezone

    _, first = post(text="第一个问题", conversation_id="cidPACED==")
    reply_to(first["msgId"], "delivered")
    conversation_id = Message.objects.get(provider_message_id=first["msgId"]).conversation_id
    pace_key = f"switchboard:pace:dingtalk:{conversation_id}"
    msg_id = f"msgPACED{uuid.uuid4().hex}=="

    def generated() -> Message | None:
        # As if the conversation kept being sent something: its key stays set until the
        # reply exists, however long generation takes, so no delivery attempt can start.
        redis_client.set(pace_key, 1, px=1000)
        return Message.objects.filter(direction="out", reply_to__provider_message_id=msg_id).first()

    generated()
    ding.fail_http("session_webhook", 503, times=MAX_RETRIES)
    post(text="第二个问题", conversation_id="cidPACED==", msg_id=msg_id)
    wait_until(generated, timeout=TIMEOUT, what="the second reply to be generated")
    held_until = timezone.now() + timedelta(seconds=2)
    redis_client.set(pace_key, 1, px=2000)

    reply = wait_until(
        lambda: Message.objects.filter(
            direction="out",
            reply_to__provider_message_id=msg_id,
            status__in=["delivered", "undeliverable"],
        ).first(),
        timeout=TIMEOUT,
        what="the paced reply to be settled",
    )
    attempts = attempts_of(reply)
    assert attempts[0].created_at >= held_until, "the first attempt did not wait its turn"
    assert [a.outcome for a in attempts] == ["retrying"] * MAX_RETRIES + ["delivered"]
    assert reply.status == "delivered" and reply.attempts == MAX_RETRIES + 1
    assert ding.requests.count(("session_webhook", 503)) == MAX_RETRIES
