"""The OpenAI-compatible endpoint against a live ASGI server, driven by the official
`openai` SDK and LangChain's `ChatOpenAI`, unchanged, streaming included."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _api_connector(bot: Any) -> None:
    """Made here, not by the server: objects the server creates are audit-logged with
    its cached content-type ids, which a transactional test's flush renumbers."""
    from switchboard.api.completions import api_connector

    api_connector(bot)


@pytest.fixture
def fresh_web(tmp_path: Any, key: str, endpoint: Any) -> Any:
    """A server of this test's own (see `_api_connector`), for what only it may create."""
    import openai
    from django.conf import settings

    from tests.support import processes

    database_url = processes.database_url_for(
        settings.DATABASE_URL, settings.DATABASES["default"]["NAME"]
    )
    with processes.web_server(
        tmp_path,
        database_url=database_url,
        redis_url=settings.REDIS_URL,
        extra_env={"SWITCHBOARD_POOL_REFRESH_S": "0"},
    ) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)


@pytest.fixture
def client(web: str, key: str, endpoint: Any) -> Any:
    import openai

    return openai.OpenAI(base_url=f"{web}/v1", api_key=key, max_retries=0, timeout=30)


def _settled(tenant: Any, calls: int) -> None:
    """Wait until `calls` calls are in the ledger: the answer goes out while its turn,
    reply and usage are written, so a test reading them right away could be early."""
    from switchboard.metering.models import UsageRecord

    wait_until(
        lambda: UsageRecord.objects.filter(tenant=tenant).count() >= calls,
        timeout=15,
        what=f"{calls} call(s) in the ledger",
    )


def _inbound(tenant: Any, calls: int = 0) -> list[Any]:
    from switchboard.conversations.models import Message

    if calls:
        _settled(tenant, calls)
    return list(
        Message.objects.for_tenant(tenant)
        .filter(direction=Message.Direction.INBOUND)
        .select_related("conversation__end_user", "connector")
    )


def test_sdk_completion_names_a_bot_and_is_metered(client: Any, tenant: Any, bot: Any) -> None:
    from switchboard.metering.models import MonthlyActiveUser, UsageRecord

    result = client.chat.completions.create(
        model=bot.name,
        messages=[{"role": "user", "content": "Hello there"}],
        user="alice@example.com",
    )
    text = result.choices[0].message.content
    # The simulator echoes the prompt it was given: the bot's system prompt went first.
    assert "Hello there" in text
    assert result.choices[0].finish_reason in ("stop", "length")
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    [inbound] = _inbound(tenant, calls=1)
    assert inbound.connector.kind == "api"
    assert inbound.status == "replied"
    assert inbound.conversation.end_user.external_id == "alice@example.com"
    assert result.id == f"chatcmpl-{inbound.pk.hex}"
    record = UsageRecord.objects.get(message_id=inbound.pk)
    assert record.outcome == "ok"
    assert record.completion_tokens == result.usage.completion_tokens
    assert MonthlyActiveUser.objects.filter(
        tenant=tenant, end_user=inbound.conversation.end_user
    ).exists()


def test_sdk_streams_chunks_that_add_up_to_the_stored_reply(
    client: Any, tenant: Any, bot: Any
) -> None:
    from switchboard.conversations.models import Message

    stream = client.chat.completions.create(
        model=bot.name,
        messages=[{"role": "user", "content": "Tell me a story"}],
        stream=True,
        stream_options={"include_usage": True},
        user="bob",
    )
    pieces: list[str] = []
    finish = None
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert len(pieces) > 2, "a stream, not one block"
    _settled(tenant, 1)
    reply = Message.objects.for_tenant(tenant).get(direction=Message.Direction.OUTBOUND)
    assert "".join(pieces) == reply.text
    assert finish == reply.finish_reason
    assert usage is not None and usage.completion_tokens == reply.completion_tokens


def test_models_lists_the_tenants_bots_and_served_models(
    client: Any, bot: Any, endpoint: Any, other_tenant: Any
) -> None:
    from switchboard.bots.services import bot_create

    bot_create(tenant=other_tenant, name="Theirs")
    ids = {model.id for model in client.models.list()}
    assert bot.name in ids and endpoint.model in ids
    assert "Theirs" not in ids


def test_a_model_the_pool_serves_is_answered_without_a_system_prompt(
    fresh_web: Any, tenant: Any, endpoint: Any
) -> None:
    from switchboard.bots.models import Bot

    result = fresh_web.chat.completions.create(
        model=endpoint.model, messages=[{"role": "user", "content": "raw access"}]
    )
    assert "raw access" in result.choices[0].message.content
    passthrough = Bot.objects.for_tenant(tenant).get(name=endpoint.model)
    assert passthrough.system_prompt == ""
    [inbound] = [m for m in _inbound(tenant, calls=1) if m.conversation.bot_id == passthrough.pk]
    # Without `user`, the key itself is the end user.
    assert inbound.conversation.end_user.external_id.startswith("key:")


def test_later_turns_of_one_chat_share_a_conversation(client: Any, tenant: Any, bot: Any) -> None:
    history = [{"role": "user", "content": "first question"}]
    first = client.chat.completions.create(model=bot.name, messages=history, user="carol")
    history += [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "second question"},
    ]
    client.chat.completions.create(model=bot.name, messages=history, user="carol")
    client.chat.completions.create(
        model=bot.name, messages=[{"role": "user", "content": "another chat"}], user="carol"
    )
    conversations = [m.conversation_id for m in _inbound(tenant, calls=3)]
    assert conversations[0] == conversations[1] != conversations[2]


def test_langchain_chat_openai_invokes_and_streams(
    web: str, key: str, bot: Any, endpoint: Any
) -> None:
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(base_url=f"{web}/v1", api_key=key, model=bot.name, max_retries=0, timeout=30)
    answer = model.invoke("What is Switchboard?")
    assert "What is Switchboard?" in answer.content
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] > 0
    chunks = list(model.stream("Stream this please"))
    assert len([c for c in chunks if c.content]) > 2
    assert "Stream this please" in "".join(str(c.content) for c in chunks)


# --- refusals and bad input -------------------------------------------------------------


def test_bad_keys_are_refused(web: str, client: Any, make_key: Any, tenant: Any, bot: Any) -> None:
    import openai

    from switchboard.apikeys.services import api_key_revoke

    def ask(api_key: str) -> None:
        openai.OpenAI(base_url=f"{web}/v1", api_key=api_key, max_retries=0).chat.completions.create(
            model=bot.name, messages=[{"role": "user", "content": "hi"}]
        )

    revoked, revoked_plain = make_key(tenant)
    api_key_revoke(key=revoked)
    read_only = make_key(tenant, scopes=("read",))[1]
    for forged in ("sb_nothing_here", revoked_plain, revoked_plain[:-2] + "xx"):
        with pytest.raises(openai.AuthenticationError) as caught:
            ask(forged)
        assert caught.value.code == "invalid_api_key"
    with pytest.raises(openai.PermissionDeniedError) as denied:
        ask(read_only)
    assert denied.value.code == "insufficient_scope"
    assert _inbound(tenant) == []


def test_a_key_revoked_while_in_use_stops_working(
    web: str, client: Any, make_key: Any, tenant: Any, bot: Any
) -> None:
    import openai

    from switchboard.apikeys.services import api_key_revoke

    key, plaintext = make_key(tenant)
    caller = openai.OpenAI(base_url=f"{web}/v1", api_key=plaintext, max_retries=0)

    def ask() -> Any:
        return caller.chat.completions.create(
            model=bot.name, messages=[{"role": "user", "content": "still there?"}]
        )

    ask()  # the server now remembers the key (SWITCHBOARD_API_KEY_CACHE_S)
    api_key_revoke(key=key)

    def refused() -> bool:
        try:
            ask()
        except openai.AuthenticationError:
            return True
        return False

    wait_until(refused, timeout=15, what="the revoked key refused")


def test_an_expired_key_is_refused(web: str, make_key: Any, tenant: Any, bot: Any) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from switchboard.apikeys.models import ApiKey

    stale, plaintext = make_key(tenant)
    ApiKey.objects.filter(pk=stale.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = httpx.post(
        f"{web}/v1/chat/completions",
        headers={"Authorization": f"Bearer {plaintext}"},
        json={"model": bot.name, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_request"),
        (b'{"model": "Helper"}', 400, "invalid_request"),
        (b'{"model": "Helper", "messages": []}', 400, "invalid_request"),
        (b'{"model": "Helper", "messages": [{"role": "wizard", "content": "x"}]}', 400,
         "invalid_request"),
        (b'{"model": "Helper", "messages": [{"role": "system", "content": "x"}]}', 400,
         "invalid_messages"),
        (b'{"model": "Helper", "n": 3, "messages": [{"role": "user", "content": "x"}]}', 400,
         "invalid_request"),
        (b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}', 404,
         "model_not_found"),
    ],
)  # fmt: skip
def test_malformed_and_unknown_targets_get_clear_errors(
    web: str, key: str, bot: Any, tenant: Any, body: bytes, status: int, code: str
) -> None:
    response = httpx.post(
        f"{web}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        content=body,
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert _inbound(tenant) == []


def test_an_oversized_body_is_refused_before_it_is_read(web: str, key: str, bot: Any) -> None:
    from django.conf import settings

    huge = "x" * (settings.SWITCHBOARD_API_MAX_BODY_BYTES + 1)
    response = httpx.post(
        f"{web}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": bot.name, "messages": [{"role": "user", "content": huge}]},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_another_tenants_bot_is_an_unknown_model(
    web: str, key: str, other_tenant: Any, endpoint: Any
) -> None:
    from switchboard.bots.services import bot_create

    theirs = bot_create(tenant=other_tenant, name="Secret bot")
    response = httpx.post(
        f"{web}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": theirs.name, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_the_licence_rate_limit_answers_429_with_retry_after(
    client: Any, tenant: Any, bot: Any, licence_for: Any
) -> None:
    import openai

    # The web process reads the free tier from its environment; a licence is what a
    # test can change live: 2 messages a minute per user.
    licence_for(tenant, user_messages_per_minute=2)
    for _ in range(2):
        client.chat.completions.create(
            model=bot.name, messages=[{"role": "user", "content": "hi"}], user="dave"
        )
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model=bot.name, messages=[{"role": "user", "content": "hi"}], user="dave"
        )
    assert caught.value.code == "rate_limit_exceeded"
    assert int(caught.value.response.headers["Retry-After"]) >= 1
    assert len(_inbound(tenant, calls=2)) == 2  # the refused one stored nothing


def test_the_mau_limit_refuses_a_new_user(
    client: Any, tenant: Any, bot: Any, licence_for: Any
) -> None:
    import openai

    licence_for(tenant, mau_limit=1)
    client.chat.completions.create(
        model=bot.name, messages=[{"role": "user", "content": "hi"}], user="first"
    )
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(
            model=bot.name, messages=[{"role": "user", "content": "hi"}], user="second"
        )
    assert caught.value.code == "mau_limit_reached"
    # The user counted already is still served.
    client.chat.completions.create(
        model=bot.name, messages=[{"role": "user", "content": "again"}], user="first"
    )


def test_a_dead_pool_answers_503_and_the_failure_is_in_the_ledger(
    client: Any, tenant: Any, bot: Any, endpoint: Any
) -> None:
    import openai

    from switchboard.metering.models import UsageRecord
    from switchboard.pool.models import InferenceEndpoint

    InferenceEndpoint.objects.filter(pk=endpoint.pk).update(url="http://127.0.0.1:9")
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(
            model=bot.name, messages=[{"role": "user", "content": "anyone?"}]
        )
    assert caught.value.status_code == 503
    [inbound] = _inbound(tenant, 1)
    assert inbound.status == "failed"
    assert UsageRecord.objects.get(message_id=inbound.pk).outcome == "error"


def test_the_stream_is_valid_server_sent_events(
    web: str, key: str, bot: Any, endpoint: Any
) -> None:
    with httpx.stream(
        "POST",
        f"{web}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": bot.name, "stream": True, "messages": [{"role": "user", "content": "x"}]},
        timeout=30,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1


def test_calls_reach_the_metrics_counters(client: Any, tenant: Any, bot: Any) -> None:
    """The web process sums its Redis bookkeeping and writes it every 0.1 s."""
    from switchboard.observability import counters

    for turn in range(3):
        client.chat.completions.create(
            model=bot.name, messages=[{"role": "user", "content": f"count me {turn}"}]
        )

    def counted() -> dict[str, float] | None:
        families = counters.read_all()
        mine = {
            family: sum(
                value
                for labels, value in families[family].items()
                if labels[0] == str(tenant.pk) and labels[2] == "api"
            )
            for family in (counters.MESSAGES, counters.INFERENCE)
        }
        return mine if mine[counters.INFERENCE] >= 3 else None

    figures = wait_until(counted, timeout=15, what="the calls in the metrics counters")
    assert figures == {counters.MESSAGES: 3, counters.INFERENCE: 3}


def test_requests_carry_a_request_id_into_the_access_log(
    tmp_path: Any, key: str, bot: Any, endpoint: Any
) -> None:
    """/v1/ skips Django's middleware, so it sets the request id and writes the access
    line itself, as django-guid and the access-log middleware do for every other path."""
    from django.conf import settings

    from tests.support import processes

    database_url = processes.database_url_for(
        settings.DATABASE_URL, settings.DATABASES["default"]["NAME"]
    )
    given = "0b6f7c1e-3d0a-4a56-9a43-64b5f1f3d2aa"
    with processes.web_server(
        tmp_path,
        database_url=database_url,
        redis_url=settings.REDIS_URL,
        extra_env={"SWITCHBOARD_LOG_FORMAT": "json", "SWITCHBOARD_POOL_REFRESH_S": "0"},
    ) as url:
        body = {"model": bot.name, "messages": [{"role": "user", "content": "trace me"}]}
        headers = {"Authorization": f"Bearer {key}"}
        kept = httpx.post(
            f"{url}/v1/chat/completions", json=body, headers={**headers, "X-Request-ID": given}
        )
        replaced = httpx.post(
            f"{url}/v1/chat/completions",
            json=body,
            headers={**headers, "X-Request-ID": "not a uuid; drop table"},
        )
        assert kept.status_code == replaced.status_code == 200
        assert kept.headers["x-request-id"] == given
        fresh = replaced.headers["x-request-id"]
        assert fresh != "not a uuid; drop table" and len(fresh) == 32

        def logged() -> list[dict[str, Any]] | None:
            lines = (tmp_path / "web.log").read_text().splitlines()
            records = [json.loads(line) for line in lines if line.startswith("{")]
            access = [r for r in records if r.get("path") == "/v1/chat/completions"]
            return access if len(access) >= 2 else None

        access = wait_until(logged, timeout=15, what="two access-log lines")
    ids = {record.get("request_id") for record in access}
    assert {given, fresh} <= ids
    assert all(record["status"] == 200 for record in access)
