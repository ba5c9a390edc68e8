"""Tenant isolation of the REST API: tenant A's key, with every scope, aimed at tenant
B's objects.

Every detail route of the router is tried with B's ids (the table below; a route
without a row fails `test_every_detail_route_has_a_row`). Each must answer 404 in the
API's error shape, say nothing of B, and change nothing of B's. The same requests on
A's own objects succeed, so the 404s come from the tenant boundary and not from a
malformed request. Lists filtered by B's ids, a connector made for B's bot, and usage,
MAU and licence figures must show A alone.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class World:
    """One tenant's objects, as the API names them."""

    tenant: Any
    bot: Any
    connector: Any
    conversation: Any
    message: Any
    reply: Any
    key: Any  # a key of the tenant's other than the caller's

    def target(self, kind: str) -> Any:
        return {
            "bot": self.bot.pk,
            "connector": self.connector.pk,
            # The hidden API connector the conversation came through.
            "conversation.connector": self.conversation.connector_id,
            "conversation": self.conversation.pk,
            "message": self.message.pk,
            "key": self.key.pk,
        }[kind]

    def secrets(self) -> list[str]:
        """What a response to another tenant must never contain."""
        return [
            str(value)
            for value in (
                self.tenant.pk,
                self.tenant.name,
                self.tenant.slug,
                self.bot.pk,
                self.bot.name,
                self.bot.system_prompt,
                self.connector.pk,
                self.connector.name,
                self.connector.secret,
                self.conversation.external_key,
                self.conversation.end_user.external_id,
                self.message.pk,
                self.message.text,
                self.reply.pk,
                self.reply.text,
                self.key.pk,
                self.key.name,
                self.key.prefix,
            )
        ]


def _build(tenant: Any, make_key: Any, tag: str, *, tokens: tuple[int, int]) -> World:
    """A bot with a webhook connector, one user's conversation through the API (an
    inbound message with its reply, and the call in the usage ledger), a second key."""
    from connectors.base import InboundMessage
    from switchboard.api.completions import api_connector
    from switchboard.bots.services import bot_create, connector_create_webhook
    from switchboard.conversations.models import Message
    from switchboard.conversations.services import message_receive
    from switchboard.metering import ledger

    bot = bot_create(tenant=tenant, name=f"{tag} bot", system_prompt=f"{tag} system prompt")
    connector = connector_create_webhook(
        bot=bot, name=f"{tag} connector", callback_url=f"https://{tag}.example.com/hook"
    )
    message = message_receive(
        connector=api_connector(bot),
        inbound=InboundMessage(
            channel="api",
            provider_message_id=uuid.uuid4().hex,
            user_id=f"{tag}-user",
            conversation_key=f"{tag}-conversation",
            text=f"{tag} question",
        ),
        generate=False,
    ).message
    reply = Message.objects.create(
        tenant=tenant,
        conversation=message.conversation,
        connector=message.connector,
        direction=Message.Direction.OUTBOUND,
        text=f"{tag} answer",
        status=Message.Status.DELIVERED,
        reply_to=message,
    )
    ledger.usage_record(
        inbound=message,
        bot=bot,
        outcome="ok",
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
    )
    key, _ = make_key(tenant, scopes=("read",))
    return World(tenant, bot, connector, message.conversation, message, reply, key)


@pytest.fixture
def a(tenant: Any, make_key: Any) -> World:
    return _build(tenant, make_key, "acme", tokens=(30, 12))


@pytest.fixture
def b(other_tenant: Any, make_key: Any, a: World) -> World:
    """B, built after A: the rollups are brought up to date for both at the end."""
    from connectors.base import InboundMessage
    from switchboard.api.completions import api_connector
    from switchboard.conversations.services import message_receive
    from switchboard.metering.rollups import rollups_update

    world = _build(other_tenant, make_key, "globex", tokens=(500, 200))
    # A second end user and more turns: any of B's figures in A's answers would show.
    for turn in range(3):
        message_receive(
            connector=api_connector(world.bot),
            inbound=InboundMessage(
                channel="api",
                provider_message_id=uuid.uuid4().hex,
                user_id="globex-second-user",
                conversation_key="globex-second-conversation",
                text=f"globex turn {turn}",
            ),
            generate=False,
        )
    # Past the rollups' lag (SWITCHBOARD_ROLLUP_LAG_S), so that they take both ledgers.
    rollups_update(now=timezone.now() + timedelta(minutes=5))
    return world


def _rows(tenant: Any) -> dict[str, list[dict[str, Any]]]:
    """Every row the tenant owns through the API's models, as stored."""
    from switchboard.apikeys.models import ApiKey
    from switchboard.bots.models import Bot, Connector
    from switchboard.conversations.models import Conversation, EndUser, Message

    return {
        model.__name__: list(model.objects.for_tenant(tenant).order_by("pk").values())
        for model in (Bot, Connector, Conversation, EndUser, Message, ApiKey)
    }


def _counts() -> dict[str, int]:
    """Rows of every tenant: a request must not create anything anywhere either."""
    from switchboard.apikeys.models import ApiKey
    from switchboard.bots.models import Bot, Connector
    from switchboard.conversations.models import Conversation, EndUser, Message

    return {
        model.__name__: model.objects.count()
        for model in (Bot, Connector, Conversation, EndUser, Message, ApiKey)
    }


def _assert_silent(body: bytes, world: World) -> None:
    """None of the world's names, texts, ids or secrets in the body. (Its conversation's
    id, a small integer, could match any number: the tests compare ids row by row.)"""
    text = body.decode()
    for secret in world.secrets():
        assert secret not in text, f"{secret!r} leaked: {text}"


# --- the matrix: every detail route, with B's ids ------------------------------------------

# (method, route name, which of the tenant's objects, body). The bodies are valid: on
# A's own objects the same requests succeed (`test_the_same_requests_on_own_objects_...`).
MATRIX: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("GET", "bot-detail", "bot", None),
    ("PUT", "bot-detail", "bot", {"name": "Hijacked", "system_prompt": "Tell me secrets."}),
    ("PATCH", "bot-detail", "bot", {"is_active": False}),
    ("DELETE", "bot-detail", "bot", None),
    ("POST", "bot-send", "bot", {"user": "mallory", "text": "Hello", "mode": "async"}),
    ("POST", "bot-callback-secret", "bot", None),
    ("GET", "connector-detail", "connector", None),
    (
        "PUT",
        "connector-detail",
        "connector",
        {"name": "Hijacked", "callback_url": "https://attacker.example.com/"},
    ),
    ("PATCH", "connector-detail", "connector", {"enabled": False}),
    ("DELETE", "connector-detail", "connector", None),
    ("POST", "connector-rotate-secret", "connector", None),
    ("GET", "conversation-detail", "conversation", None),
    ("GET", "conversation-messages", "conversation", None),
    ("GET", "message-detail", "message", None),
    ("GET", "apikey-detail", "key", None),
    ("DELETE", "apikey-detail", "key", None),
]
MATRIX_IDS = [f"{method} {name}" for method, name, _, _ in MATRIX]


def _detail_routes() -> set[tuple[str, str]]:
    """(method, route name) of every router route that names an object."""
    from switchboard.api.urls import router

    routes = set()
    for pattern in router.urls:
        if "pk" not in pattern.pattern.regex.groupindex:
            continue
        # DRF adds `head` to a route's map once it has served a GET: not a route of its own.
        for method in set(pattern.callback.actions) - {"head"}:  # type: ignore[attr-defined]
            routes.add((method.upper(), pattern.name))
    return routes


def test_every_detail_route_has_a_row() -> None:
    routes = _detail_routes()
    assert ("GET", "bot-detail") in routes  # the URL conf was read
    assert routes == {(method, name) for method, name, _, _ in MATRIX}


def _call(api: Any, method: str, name: str, pk: Any, body: dict[str, Any] | None) -> Any:
    url = reverse(f"api:{name}", kwargs={"pk": pk})
    return getattr(api, method.lower())(url, body, format="json")


@pytest.mark.parametrize(("method", "name", "kind", "body"), MATRIX, ids=MATRIX_IDS)
def test_another_tenants_object_is_not_found(
    api: Any, a: World, b: World, method: str, name: str, kind: str, body: dict[str, Any] | None
) -> None:
    before, counts = _rows(b.tenant), _counts()
    response = _call(api, method, name, b.target(kind), body)
    assert response.status_code == 404, response.content
    error = response.json()["error"]
    assert set(error) == {"code", "message"} and error["code"] == "not_found", error
    _assert_silent(response.content, b)
    assert _rows(b.tenant) == before
    assert _counts() == counts
    # Word for word what an id of nothing at all gets: B's objects do not show.
    nothing = 2**62 if kind == "conversation" else uuid.uuid4()
    assert _call(api, method, name, nothing, body).json() == response.json()


@pytest.mark.parametrize(("method", "name", "kind", "body"), MATRIX, ids=MATRIX_IDS)
def test_the_same_requests_on_own_objects_succeed(
    api: Any, a: World, b: World, method: str, name: str, kind: str, body: dict[str, Any] | None
) -> None:
    response = _call(api, method, name, a.target(kind), body)
    assert 200 <= response.status_code < 300, response.content
    if response.status_code != 204:
        _assert_silent(response.content, b)


# --- lists, creation, figures --------------------------------------------------------------

LISTS = [
    ("/api/v1/bots/", {}),
    ("/api/v1/bots/", {"name": "globex"}),
    ("/api/v1/connectors/", {}),
    ("/api/v1/connectors/", {"bot": "b.bot"}),
    ("/api/v1/conversations/", {}),
    ("/api/v1/conversations/", {"bot": "b.bot"}),
    ("/api/v1/conversations/", {"connector": "b.conversation.connector"}),
    ("/api/v1/conversations/", {"user": "globex-user", "channel": "api"}),
    ("/api/v1/messages/", {}),
    ("/api/v1/messages/", {"bot": "b.bot"}),
    ("/api/v1/messages/", {"conversation": "b.conversation"}),
    ("/api/v1/keys/", {}),
]


def _resolve(params: dict[str, str], b: World) -> dict[str, str]:
    """A filter's value "b.bot" (and the like) stands for the id of B's bot."""
    return {
        name: str(b.target(value[2:])) if value.startswith("b.") else value
        for name, value in params.items()
    }


@pytest.mark.parametrize(
    ("path", "params"),
    LISTS,
    ids=[f"{path}?{'&'.join(f'{k}={v}' for k, v in p.items())}" for path, p in LISTS],
)
def test_lists_show_none_of_another_tenants_rows(
    api: Any, a: World, b: World, path: str, params: dict[str, str]
) -> None:
    from switchboard.apikeys.models import ApiKey

    response = api.get(path, _resolve(params, b))
    assert response.status_code == 200, response.content
    rows = response.json()["results"]
    _assert_silent(response.content, b)
    if params:
        assert rows == []
        return
    # Unfiltered: exactly A's rows. The list works; it just stops at A.
    mine = {
        "/api/v1/bots/": {str(a.bot.pk)},
        "/api/v1/connectors/": {str(a.connector.pk)},
        "/api/v1/conversations/": {a.conversation.pk},
        "/api/v1/messages/": {str(a.message.pk), str(a.reply.pk)},
        "/api/v1/keys/": {
            str(pk) for pk in ApiKey.objects.for_tenant(a.tenant).values_list("pk", flat=True)
        },
    }[path]
    assert len(mine) >= 1 and {row["id"] for row in rows} == mine


def test_a_connector_for_another_tenants_bot_is_refused(api: Any, a: World, b: World) -> None:
    body = {"kind": "webhook", "name": "Sneaky", "callback_url": "https://attacker.example.com/"}
    before, counts = _rows(b.tenant), _counts()
    response = api.post("/api/v1/connectors/", {**body, "bot": str(b.bot.pk)}, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error" and list(error["details"]) == ["bot"], error
    assert _rows(b.tenant) == before
    assert _counts() == counts
    # The error repeats the id the caller sent, and says of it what it says of an id of
    # no bot at all.
    nothing = str(uuid.uuid4())
    unknown = api.post("/api/v1/connectors/", {**body, "bot": nothing}, format="json")
    assert unknown.status_code == 400
    assert response.content.decode().replace(str(b.bot.pk), nothing) == unknown.content.decode()
    # The same request naming A's bot is fine.
    response = api.post("/api/v1/connectors/", {**body, "bot": str(a.bot.pk)}, format="json")
    assert response.status_code == 201, response.content


@pytest.mark.parametrize("group_by", ["day", "hour", "bot", "tenant"])
def test_usage_counts_only_the_callers_tenant(api: Any, a: World, b: World, group_by: str) -> None:
    response = api.get("/api/v1/usage/", {"group_by": group_by})
    assert response.status_code == 200, response.content
    rows = response.json()["rows"]
    _assert_silent(response.content, b)
    assert sum(row["requests"] for row in rows) == 1
    assert sum(row["prompt_tokens"] for row in rows) == 30
    assert sum(row["completion_tokens"] for row in rows) == 12
    if group_by == "bot":
        assert [row["bot_id"] for row in rows] == [str(a.bot.pk)]


def test_usage_of_another_tenants_bot_is_empty(api: Any, a: World, b: World) -> None:
    response = api.get("/api/v1/usage/", {"group_by": "day", "bot": str(b.bot.pk)})
    assert response.status_code == 200, response.content
    assert response.json()["rows"] == []
    # A's own bot, for contrast.
    own = api.get("/api/v1/usage/", {"group_by": "day", "bot": str(a.bot.pk)}).json()
    assert sum(row["prompt_tokens"] for row in own["rows"]) == 30


def test_usage_csv_counts_only_the_callers_tenant(api: Any, a: World, b: World) -> None:
    response = api.get("/api/v1/usage/", {"group_by": "day", "output": "csv"})
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    _assert_silent(body, b)
    assert str(a.bot.pk) in body.decode()


def test_mau_and_licence_count_only_the_callers_tenant(api: Any, a: World, b: World) -> None:
    from switchboard.metering.selectors import mau_current

    assert mau_current(b.tenant).active == 2  # B's users are counted, for B
    mau = api.get("/api/v1/mau/")
    assert mau.status_code == 200, mau.content
    assert mau.json()["current"]["active"] == 1
    assert sum(month["active"] for month in mau.json()["history"]) == 1
    licence = api.get("/api/v1/licence/")
    assert licence.status_code == 200, licence.content
    assert licence.json()["tokens_used_this_month"] == 42
    assert licence.json()["mau_this_month"] == 1
    _assert_silent(mau.content + licence.content, b)
