"""Tmall Genie (AliGenie) voice turns through real processes: the web ingress (live
server) waits for a Celery worker process, which asks a simulated vLLM endpoint process.

The worker consumes ONLY the `realtime` queue: a generation sent to any other queue
would never run, so every synchronous answer here also proves the queue it ran on.

Two models: the session's default simulator (fast; the connector's voice budget is a
generous 20 s so a slow CI box still answers in time) and a second simulator whose first
token takes seconds, for a connector whose budget is a few hundred milliseconds: that
turn cannot be answered in time whatever the machine, so "still thinking" (`ASK_INF`)
and the held answer are deterministic.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from connectors import aligenie
from switchboard.bots.models import Bot, Connector
from switchboard.conversations.models import DeliveryAttempt, Message
from switchboard.pool.models import InferenceEndpoint
from tests.support import aligenie_client as genie
from tests.support import processes
from tests.support.aligenie_fixtures import (
    active_queues,
    completions_finished,
    completions_running,
    ingress_url,
    simulator_process,
)
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TIMEOUT = 60
SKILL_ID = 8973
INTENT_ID = 17063
GENEROUS_BUDGET_MS = 20_000
SHORT_BUDGET_MS = 300
SLOW_TTFT_MS = 6_000
QUEUES = ("realtime", "chat", "default")


@pytest.fixture(scope="module")
def realtime_worker(
    django_db_setup: None,
    django_db_blocker: Any,
    tmp_path_factory: pytest.TempPathFactory,
    redis_client: redis.Redis,
) -> Iterator[processes.Worker]:
    from django.conf import settings

    redis_client.delete(*QUEUES)
    database_url = processes.database_url_for(
        settings.DATABASE_URL, settings.DATABASES["default"]["NAME"]
    )
    with processes.celery_worker(
        tmp_path_factory.mktemp("voice-worker"),
        queues=["realtime"],
        database_url=database_url,
        redis_url=settings.REDIS_URL,
        # Every test replaces the endpoint rows; the worker must not route on stale ones.
        extra_env={"SWITCHBOARD_POOL_REFRESH_S": "0"},
    ) as worker:
        yield worker
    redis_client.delete(*QUEUES)


@pytest.fixture(scope="module")
def slow_simulator_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # Every first token is late (a latency spike on each request); decoding stays fast, so
    # the held reply is ready soon after the speaker's budget has run out.
    flags = ["--latency-spike-rate", "1", "--latency-spike-ms", str(SLOW_TTFT_MS)]
    with simulator_process(tmp_path_factory.mktemp("slow-sim"), name="sim-slow", flags=flags) as u:
        yield u


@pytest.fixture
def slow_endpoint(db: None, slow_simulator_url: str) -> InferenceEndpoint:
    return InferenceEndpoint.objects.create(name="sim-slow", url=slow_simulator_url)


def _aligenie(bot: Bot, *, name: str, budget_ms: int) -> Connector:
    from switchboard.bots.services import connector_create_aligenie

    return connector_create_aligenie(
        bot=bot, name=name, skill_id=SKILL_ID, voice_budget_ms=budget_ms
    )


@pytest.fixture
def speaker(bot: Bot) -> Connector:
    return _aligenie(bot, name="Kitchen speaker", budget_ms=GENEROUS_BUDGET_MS)


@pytest.fixture
def slow_speaker(bot: Bot) -> Connector:
    return _aligenie(bot, name="Hall speaker", budget_ms=SHORT_BUDGET_MS)


@pytest.fixture
def say(live_server: Any) -> Callable[..., dict[str, Any]]:
    """POST one turn to a connector and return the ResultModel it answered."""

    def post(connector: Connector, body: dict[str, Any]) -> dict[str, Any]:
        response = genie.post(ingress_url(live_server.url, connector), body, timeout=60)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        return response.json()

    return post


def turn(utterance: str, session_id: str, **overrides: Any) -> dict[str, Any]:
    return genie.task_query(
        utterance, session_id=session_id, skill_id=SKILL_ID, intent_id=INTENT_ID, **overrides
    )


def assert_result(answer: dict[str, Any]) -> str:
    assert answer["returnCode"] == "0", answer
    value = answer["returnValue"]
    assert (value["resultType"], value["executeCode"]) == ("RESULT", "SUCCESS"), answer
    assert value["askedInfos"] == []
    return str(value["reply"])


def assert_still_thinking(answer: dict[str, Any], bot: Bot) -> None:
    assert answer["returnCode"] == "0", answer
    value = answer["returnValue"]
    assert (value["resultType"], value["executeCode"]) == ("ASK_INF", "SUCCESS"), answer
    assert value["reply"] == bot.voice_pending_reply
    assert value["askedInfos"] == [{"parameterName": "question", "intentId": INTENT_ID}]


def assert_spoken_once(reply: Message, turn: Message) -> None:
    """The reply was delivered as the synchronous answer to `turn`, exactly once."""
    reply.refresh_from_db()
    assert reply.status == Message.Status.DELIVERED
    attempts = list(DeliveryAttempt.objects.filter(message=reply))
    assert len(attempts) == 1
    attempt = attempts[0]
    assert (attempt.via, attempt.outcome) == ("sync_response", "delivered")
    assert attempt.response_excerpt == f"answered turn {turn.pk}"


def assert_settled(redis_client: redis.Redis) -> None:
    """No generation is pending: nothing on the voice queue, no turn left unanswered.

    (A generation queued anywhere else would leave its turn `received`, caught below.)
    """
    assert redis_client.llen("realtime") == 0
    assert not Message.objects.filter(direction="in").exclude(status="replied").exists()


def wait_for_reply_to(inbound: Message) -> Message:
    return wait_until(
        lambda: Message.objects.filter(reply_to=inbound).first(),
        timeout=TIMEOUT,
        what="the reply to be generated",
    )


# --- the queue ------------------------------------------------------------------------------


def test_voice_worker_consumes_only_the_realtime_queue(
    realtime_worker, endpoint, speaker, say
) -> None:
    assert active_queues(realtime_worker) == {"realtime"}
    reply = assert_result(say(speaker, turn("你好", str(uuid.uuid4()))))
    assert "你好" in reply
    assert "conversations.tasks.generate_reply[" in realtime_worker.log_text()


# --- answered within the budget -------------------------------------------------------------


def test_plaintext_query_is_answered_synchronously_with_a_speakable_reply(
    realtime_worker, endpoint, speaker, say, redis_client
) -> None:
    session = str(uuid.uuid4())
    answer = say(speaker, turn("讲讲**东坡肉**的做法", session))

    reply_text = assert_result(answer)
    # The simulator echoes the utterance; its markdown was stripped for the speaker.
    assert "simulated" in reply_text and "讲讲东坡肉的做法" in reply_text
    assert not any(mark in reply_text for mark in ("*", "#", "`", "\n"))
    assert len(reply_text) <= speaker.bot.voice_max_chars

    inbound = Message.objects.get(direction="in")
    reply = Message.objects.get(direction="out")
    assert inbound.status == Message.Status.REPLIED
    assert inbound.conversation.external_key == f"session:{session}"
    assert (reply.reply_to_id, reply.text) == (inbound.pk, reply_text)
    assert reply.endpoint_id == endpoint.pk
    assert_spoken_once(reply, inbound)
    assert_settled(redis_client)


def test_encrypted_query_is_answered_like_a_plaintext_one(
    realtime_worker, endpoint, speaker, say, redis_client
) -> None:
    from switchboard.bots.services import connector_generate_keypair

    public_pem = connector_generate_keypair(connector=speaker)
    body = turn("红烧肉怎么做", str(uuid.uuid4()))

    reply_text = assert_result(say(speaker, genie.encrypt_query(body, public_pem)))

    assert "红烧肉怎么做" in reply_text
    inbound = Message.objects.get(direction="in")
    assert inbound.provider_message_id == body["requestId"]
    assert_spoken_once(Message.objects.get(direction="out"), inbound)
    assert_settled(redis_client)


def test_intent_and_slot_values_reach_the_prompt(realtime_worker, endpoint, speaker, say) -> None:
    body = turn(
        "帮我点菜",
        str(uuid.uuid4()),
        intent_name="点菜",
        slots=[
            genie.slot_entity("foodname", "东坡肉"),
            # The normalised value is what the model gets.
            genie.slot_entity("city", "帝都", standard_value="北京"),
        ],
    )
    reply_text = assert_result(say(speaker, body))

    inbound = Message.objects.get(direction="in")
    assert inbound.text == "帮我点菜\n[intent: 点菜; foodname=东坡肉; city=北京]"
    # What the model saw is what it echoed back.
    assert "intent: 点菜; foodname=东坡肉; city=北京" in reply_text


def test_retried_request_gets_the_same_answer_from_one_generation(
    realtime_worker, endpoint, simulator_url, speaker, say, redis_client
) -> None:
    before = completions_finished(simulator_url)
    body = turn("今天吃什么", str(uuid.uuid4()))

    first = say(speaker, body)
    retry = say(speaker, body)

    assert assert_result(first) == assert_result(retry)
    assert Message.objects.filter(direction="in").count() == 1
    assert Message.objects.filter(direction="out").count() == 1
    assert_settled(redis_client)
    assert completions_finished(simulator_url) == before + 1


# --- answered after the budget --------------------------------------------------------------


def test_slow_model_says_still_thinking_and_the_next_turn_hears_the_held_reply(
    realtime_worker, slow_endpoint, slow_simulator_url, slow_speaker, say, redis_client
) -> None:
    bot = slow_speaker.bot
    before = completions_finished(slow_simulator_url)
    session = str(uuid.uuid4())

    assert_still_thinking(say(slow_speaker, turn("东坡肉要炖多久", session)), bot)
    first_turn = Message.objects.get(direction="in")
    reply = wait_for_reply_to(first_turn)
    assert reply.status == Message.Status.PENDING  # held for the session's next turn

    answer = say(slow_speaker, turn("好了吗", session))

    assert assert_result(answer) == reply.text
    assert "sim-slow" in reply.text and "东坡肉要炖多久" in reply.text
    next_turn = Message.objects.get(direction="in", text="好了吗\n[intent: 点菜]")
    assert_spoken_once(reply, next_turn)
    # The next turn was answered from the held reply: nothing new was generated.
    assert Message.objects.filter(direction="out").count() == 1
    assert_settled(redis_client)
    assert completions_running(slow_simulator_url) == 0
    assert completions_finished(slow_simulator_url) == before + 1


def test_turn_while_the_answer_is_still_generating_never_starts_a_second_generation(
    realtime_worker, slow_endpoint, slow_simulator_url, slow_speaker, say, redis_client
) -> None:
    bot = slow_speaker.bot
    before = completions_finished(slow_simulator_url)
    session = str(uuid.uuid4())

    assert_still_thinking(say(slow_speaker, turn("东坡肉要炖多久", session)), bot)
    first_turn = Message.objects.get(direction="in")
    wait_until(
        lambda: completions_running(slow_simulator_url) == 1,
        timeout=TIMEOUT,
        what="the model to start generating",
    )

    impatient = say(slow_speaker, turn("好了吗", session))

    reply = wait_for_reply_to(first_turn)
    if impatient["returnValue"]["resultType"] == "ASK_INF":
        assert_still_thinking(impatient, bot)
        # Still held: the turn after hears it.
        assert assert_result(say(slow_speaker, turn("现在呢", session))) == reply.text
    else:
        # A very slow box: the answer came while the impatient turn waited.
        assert assert_result(impatient) == reply.text
    reply.refresh_from_db()
    assert reply.status == Message.Status.DELIVERED
    assert Message.objects.filter(direction="out").count() == 1
    assert_settled(redis_client)
    assert completions_finished(slow_simulator_url) == before + 1


def test_retry_of_the_turn_that_heard_the_held_reply_hears_it_again(
    realtime_worker, slow_endpoint, slow_simulator_url, slow_speaker, say, redis_client
) -> None:
    before = completions_finished(slow_simulator_url)
    session = str(uuid.uuid4())
    assert_still_thinking(say(slow_speaker, turn("东坡肉要炖多久", session)), slow_speaker.bot)
    reply = wait_for_reply_to(Message.objects.get(direction="in"))
    next_turn = turn("好了吗", session)
    heard = say(slow_speaker, next_turn)

    # AliGenie did not get our answer in time and sends the same request again.
    retry = say(slow_speaker, next_turn)

    assert assert_result(retry) == assert_result(heard) == reply.text
    assert Message.objects.filter(direction="in").count() == 2
    assert Message.objects.filter(direction="out").count() == 1
    assert_settled(redis_client)
    assert completions_finished(slow_simulator_url) == before + 1


# --- recovery -------------------------------------------------------------------------------


def test_stalled_voice_turn_is_regenerated_on_the_realtime_queue(
    realtime_worker, endpoint, speaker
) -> None:
    """The sweeper re-enqueues a voice turn whose task Redis lost, on the voice queue."""
    from datetime import timedelta

    from django.utils import timezone

    from switchboard.conversations import services
    from switchboard.conversations.tasks import requeue_stalled_messages

    session = str(uuid.uuid4())
    # Stored as the ingress would, but its generation never reached the broker.
    query = aligenie.parse_query(
        genie.encode(turn("还在吗", session)), private_key_pem=None, max_bytes=65536
    )
    stored = services.message_receive(
        connector=speaker, inbound=aligenie.to_inbound(query), generate=False
    ).message
    long_ago = timezone.now() - timedelta(hours=1)
    Message.objects.filter(pk=stored.pk).update(status="received", created_at=long_ago)

    counts = requeue_stalled_messages.apply().get()

    assert counts["generations"] == 1
    reply = wait_for_reply_to(stored)
    assert "还在吗" in reply.text
