"""Plaintext TaskQuery parsing, validation, the skill check and the InboundMessage mapping."""

from __future__ import annotations

import json

import pytest

from connectors.aligenie import (
    AliGenieQuery,
    check_skill,
    parse_query,
    prompt_text,
    provider_message_id,
    to_inbound,
)
from connectors.base import InvalidSignature, MalformedPayload, PayloadTooLarge
from tests.support.aligenie_client import encode, slot_entity, task_query

MAX = 64 * 1024

# The community captures quoted in PROTOCOLS.md §D.1.
COMMUNITY_1 = {
    "sessionId": "136485b1-aa30-48c4-a4f3-c8b916e31374",
    "utterance": "美食管家教我做东坡肉",
    "skillId": 8973,
    "skillName": "美食管家",
    "intentId": 17063,
    "intentName": "点菜",
    "requestData": {},
    "slotEntities": [
        {
            "intentParameterName": "foodname",
            "originalValue": "东坡肉",
            "standardValue": "东坡肉",
            "liveTime": 0,
            "createTimeStamp": 1519698715983,
            "slotValue": "东坡肉",
        }
    ],
    "conversationRecords": [],
    "sessionEntries": {
        "CONTEXT_ENTRY_KEY_BOT_DATA_ID": {
            "timeToLive": 0,
            "liveTime": 0,
            "timeStamp": 1519698715999,
            "value": "20866",
        }
    },
    "botId": 20866,
    "domainId": 15439,
}
COMMUNITY_2 = {
    **COMMUNITY_1,
    "slotEntities": [{**COMMUNITY_1["slotEntities"][0], "intentParameterId": 24076}],
    "requestId": "20180824222512035-1729115729",
    "requestData": {"city": "石家庄市"},
    "skillNluInfo": {"isNluLink": True, "invocationName": "你好小米", "isTest": True},
}


def parse(body: dict | bytes, **kwargs) -> AliGenieQuery:
    raw = body if isinstance(body, bytes) else encode(body)
    return parse_query(raw, private_key_pem=kwargs.get("key"), max_bytes=kwargs.get("max", MAX))


def test_first_community_example():
    q = parse(COMMUNITY_1)
    assert q == AliGenieQuery(
        session_id="136485b1-aa30-48c4-a4f3-c8b916e31374",
        utterance="美食管家教我做东坡肉",
        user_open_id="",
        device_open_id="",
        skill_id=8973,
        skill_name="美食管家",
        intent_id=17063,
        intent_name="点菜",
        slots=(("foodname", "东坡肉"),),
        request_id="",
        token="",
        is_test=False,
        timestamp_ms=1519698715999,
        encrypted=False,
    )
    assert q.user_key == "session:136485b1-aa30-48c4-a4f3-c8b916e31374"


def test_second_community_example():
    q = parse(COMMUNITY_2)
    assert q.request_id == "20180824222512035-1729115729"
    assert q.is_test is True
    assert q.slots == (("foodname", "东坡肉"),)


def test_full_query_from_the_test_client():
    q = parse(
        task_query(
            "明天杭州天气",
            intent_name="weather",
            slots=[
                slot_entity("city", "杭州", standard_value="杭州市"),
                slot_entity("date", "明天"),
            ],
            user_open_id="u-1",
            device_open_id="d-1",
            token="tok",
            is_test=False,
        )
    )
    assert (q.user_open_id, q.device_open_id, q.user_key) == ("u-1", "d-1", "u-1")
    assert q.slots == (("city", "杭州市"), ("date", "明天"))  # standardValue wins
    assert q.token == "tok"
    assert q.is_test is False


def test_slot_value_falls_back_from_standard_to_original_to_slot_value():
    body = task_query(
        "x",
        slots=[
            {"intentParameterName": "a", "standardValue": "", "originalValue": "orig"},
            {"intentParameterName": "b", "slotValue": "sv"},
            {"slotName": "c", "standardValue": None, "slotValue": "only"},
            {"intentParameterName": "empty"},  # nothing to say: dropped
        ],
    )
    assert parse(body).slots == (("a", "orig"), ("b", "sv"), ("c", "only"))


def test_user_falls_back_to_the_device_then_the_session():
    online_test = task_query("你好", user_open_id=None, device_open_id="d-9", session_id="s-9")
    assert "requestData" not in online_test
    assert parse(online_test).user_key == "device:d-9"
    del online_test["device"]
    assert parse(online_test).user_key == "session:s-9"
    in_request_data = {**online_test, "requestData": {"deviceOpenId": "d-8"}}
    assert parse(in_request_data).user_key == "device:d-8"


def test_ids_may_arrive_as_digit_strings():
    q = parse({**COMMUNITY_1, "skillId": "8973", "intentId": "17063"})
    assert (q.skill_id, q.intent_id) == (8973, 17063)


def test_empty_utterance_is_accepted_with_an_intent():
    q = parse({"sessionId": "s", "utterance": "", "intentName": "welcome"})
    assert q.utterance == ""
    assert prompt_text(q) == "[intent: welcome]"


def test_oversized_body():
    with pytest.raises(PayloadTooLarge) as exc:
        parse(encode(COMMUNITY_1), max=100)
    assert (exc.value.status, exc.value.code) == (413, "payload_too_large")
    assert "100 bytes" in exc.value.message


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\xff\xfe{}", "request body is not valid UTF-8"),
        (b"{not json", "request body is not valid JSON: Expecting property name"),
        (b"", "request body is not valid JSON"),
        (b"[1, 2]", "request body must be a JSON object"),
        (b'"text"', "request body must be a JSON object"),
    ],
)
def test_unreadable_bodies(raw, message):
    with pytest.raises(MalformedPayload) as exc:
        parse(raw)
    assert (exc.value.status, exc.value.code) == (400, "malformed_payload")
    assert exc.value.message.startswith(message)


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"sessionId": None}, "sessionId", "is required (a non-empty string)"),
        ({"sessionId": "  "}, "sessionId", "is required (a non-empty string)"),
        ({"sessionId": 42}, "sessionId", "must be a string, got a number"),
        ({"sessionId": "s" * 300}, "sessionId", "must be at most 256 characters"),
        ({"utterance": ["hi"]}, "utterance", "must be a string, got a list"),
        ({"skillId": "abc"}, "skillId", "must be a non-negative integer id, got a string"),
        ({"skillId": True}, "skillId", "must be a non-negative integer id, got a boolean"),
        ({"intentId": 1.5}, "intentId", "must be a non-negative integer id, got a number"),
        ({"requestData": "x"}, "requestData", "must be an object, got a string"),
        ({"requestData": {"userOpenId": 7}}, "requestData.userOpenId", "must be a string"),
        ({"device": []}, "device", "must be an object, got a list"),
        ({"slotEntities": {}}, "slotEntities", "must be a list, got an object"),
        ({"slotEntities": ["x"]}, "slotEntities[0]", "must be an object, got a string"),
        (
            {"slotEntities": [{"intentParameterName": "a", "standardValue": 3}]},
            "slotEntities[0].standardValue",
            "must be a string, got a number",
        ),
        ({"skillNluInfo": {"isTest": "yes"}}, "skillNluInfo.isTest", "must be true or false"),
        ({"token": {}}, "token", "must be a string, got an object"),
    ],
)
def test_wrong_types_are_reported_by_field(change, field, message):
    body = {**COMMUNITY_1, **change}
    with pytest.raises(MalformedPayload) as exc:
        parse(body)
    assert exc.value.status == 400
    assert exc.value.message.startswith("invalid or missing TaskQuery fields: ")
    assert field in exc.value.message
    assert exc.value.details[0]["field"] == field
    assert exc.value.details[0]["message"].startswith(message)


def test_missing_session_id():
    body = dict(COMMUNITY_1)
    del body["sessionId"]
    with pytest.raises(MalformedPayload) as exc:
        parse(body)
    assert exc.value.message == "invalid or missing TaskQuery fields: sessionId"
    assert exc.value.details == [
        {"field": "sessionId", "message": "is required (a non-empty string)"}
    ]


def test_every_problem_is_listed_at_once():
    with pytest.raises(MalformedPayload) as exc:
        parse({"sessionId": 1, "skillId": "x", "device": 3})
    assert [d["field"] for d in exc.value.details] == ["sessionId", "device", "skillId"]


def test_a_query_with_nothing_to_answer():
    with pytest.raises(MalformedPayload) as exc:
        parse({"sessionId": "s", "utterance": " "})
    assert "neither an utterance nor an intentName" in exc.value.message


# --- skill check -----------------------------------------------------------------------


def test_skill_check():
    q = parse(COMMUNITY_1)
    check_skill(q, expected_skill_id=8973)
    check_skill(q, expected_skill_id=None)
    with pytest.raises(InvalidSignature) as exc:
        check_skill(q, expected_skill_id=1)
    assert (exc.value.status, exc.value.code) == (401, "invalid_signature")
    assert exc.value.message == "the query is for skill 8973, but this connector belongs to skill 1"
    no_skill = parse({"sessionId": "s", "utterance": "hi"})
    with pytest.raises(InvalidSignature, match="has no skillId"):
        check_skill(no_skill, expected_skill_id=8973)


# --- mapping ---------------------------------------------------------------------------


def test_to_inbound_with_request_id():
    msg = to_inbound(
        parse(task_query("你好", request_id="r-1", user_open_id="u-1", session_id="s"))
    )
    assert msg.channel == "aligenie"
    assert msg.provider_message_id == "r-1"
    assert msg.user_id == "u-1"
    assert msg.conversation_key == "session:s"
    assert msg.reply_handle == {
        "session_id": "s",
        "intent_id": 17063,
        "intent_name": "点菜",
        "skill_id": 8973,
        "request_id": "r-1",
    }
    json.dumps(msg.reply_handle)  # stored with the message: must serialise


def test_prompt_text_carries_intent_and_slots():
    msg = to_inbound(parse(COMMUNITY_1))
    assert msg.text == "美食管家教我做东坡肉\n[intent: 点菜; foodname=东坡肉]"
    q = parse({"sessionId": "s", "utterance": "hello"})
    assert prompt_text(q) == "hello"
    multi = parse(
        {
            "sessionId": "s",
            "utterance": "订票",
            "intentName": "book",
            "slotEntities": [
                {"intentParameterName": "from", "standardValue": "北京\n南站"},
                {"intentParameterName": "to", "standardValue": "上海"},
            ],
        }
    )
    assert prompt_text(multi) == "订票\n[intent: book; from=北京 南站; to=上海]"


def test_provider_id_without_request_id_is_stable_and_distinct():
    first = to_inbound(parse(COMMUNITY_1)).provider_message_id
    assert first.startswith("sha256:")
    assert to_inbound(parse(json.loads(json.dumps(COMMUNITY_1)))).provider_message_id == first
    other_words = {**COMMUNITY_1, "utterance": "美食管家教我做红烧肉"}
    assert provider_message_id(parse(other_words)) != first
    other_slot = {
        **COMMUNITY_1,
        "slotEntities": [{**COMMUNITY_1["slotEntities"][0], "standardValue": "红烧肉"}],
    }
    assert provider_message_id(parse(other_slot)) != first
    later = {
        **COMMUNITY_1,
        "sessionEntries": {"k": {"timeStamp": 1519698799999}},
    }
    assert provider_message_id(parse(later)) != first
    other_session = {**COMMUNITY_1, "sessionId": "another"}
    assert provider_message_id(parse(other_session)) != first
