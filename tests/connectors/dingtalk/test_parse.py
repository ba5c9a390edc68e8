"""Callback bodies (PROTOCOLS.md §A.3) to `DingTalkMessage` and `InboundMessage`."""

# Chinese punctuation and verbatim DingTalk examples are the point of these tests.
# ruff: noqa: E501

from __future__ import annotations

import json
from typing import Any

import pytest

from connectors.base import MalformedPayload
from connectors.dingtalk import AtUser, parse_message, strip_mentions, to_inbound

# Verbatim from DT-DOC-RECV (§A.3).
OFFICIAL_GROUP = """{
    "conversationId": "xxx",
    "atUsers": [{"dingtalkId": "xxx", "staffId":"xxx"}],
    "chatbotCorpId": "dinge8a565xxxx",
    "chatbotUserId": "$:LWCP_v1:$Cxxxxx",
    "msgId": "msg0xxxxx",
    "senderNick": "杨xx",
    "isAdmin": true,
    "senderStaffId": "user123",
    "sessionWebhookExpiredTime": 1613635652738,
    "createAt": 1613630252678,
    "senderCorpId": "dinge8a565xxxx",
    "conversationType": "2",
    "senderId": "$:LWCP_v1:$Ff09GIxxxxx",
    "conversationTitle": "机器人测试-TEST",
    "isInAtList": true,
    "sessionWebhook": "https://oapi.dingtalk.com/robot/sendBySession?session=xxxxx",
    "text": {"content": " 你好"},
    "msgtype": "text"
}"""

# Verbatim from PEDIA docs/learn/bot/message.md (§A.3).
OFFICIAL_DM = """{"conversationId":"cide****4g=","chatbotCorpId":"ding****6741","chatbotUserId":"$:LWC****ihY/",
 "msgId":"msgY****Pw==","senderNick":"张三","isAdmin":true,"senderStaffId":"042***297",
 "sessionWebhookExpiredTime":1695289035996,"createAt":1695283635765,"senderCorpId":"ding****6741",
 "conversationType":"1","senderId":"$:LWC****PA==",
 "sessionWebhook":"https://oapi.dingtalk.com/robot/sendBySession?session=79b48****4d4b",
 "robotCode":"ding****c6gk","msgtype":"text","text":{"content":"hello DingTalk!"}}"""


def _dm(**overrides: Any) -> dict[str, Any]:
    body = json.loads(OFFICIAL_DM)
    body.pop("text")
    body.update(overrides)
    return body


def test_official_group_example():
    msg = parse_message(OFFICIAL_GROUP.encode("utf-8"))
    assert msg.text == "你好"
    assert msg.msg_id == "msg0xxxxx" and msg.msgtype == "text"
    assert msg.conversation_type == "2" and msg.is_group
    assert msg.conversation_title == "机器人测试-TEST"
    assert msg.sender_staff_id == "user123" and msg.sender_nick == "杨xx"
    assert msg.sender_id == "$:LWCP_v1:$Ff09GIxxxxx"
    assert msg.session_webhook_expires_ms == 1613635652738
    assert msg.create_at_ms == 1613630252678
    assert msg.robot_code == ""  # the 2021 example predates robotCode
    assert msg.at_users == (AtUser(dingtalk_id="xxx", staff_id="xxx"),)


def test_official_dm_example():
    msg = parse_message(OFFICIAL_DM)
    assert msg.text == "hello DingTalk!"
    assert msg.conversation_type == "1" and not msg.is_group
    assert msg.robot_code == "ding****c6gk"
    assert msg.chatbot_corp_id == "ding****6741"
    assert msg.chatbot_user_id == "$:LWC****ihY/"
    assert msg.sender_corp_id == "ding****6741"


def test_rich_text_joins_text_and_ignores_pictures():
    body = _dm(
        msgtype="richText",
        content={
            "richText": [
                {"text": " 看看这张图"},
                {"pictureDownloadCode": "pdc", "downloadCode": "dc", "type": "picture"},
                {"text": "是什么？"},
            ]
        },
    )
    assert parse_message(body).text == "看看这张图\n是什么？"


def test_rich_text_of_only_pictures_is_unanswerable():
    body = _dm(msgtype="richText", content={"richText": [{"type": "picture", "downloadCode": "d"}]})
    assert parse_message(body).text is None


def test_audio_uses_the_recognition():
    body = _dm(
        msgtype="audio", content={"duration": 4000, "downloadCode": "d", "recognition": "几点了"}
    )
    assert parse_message(body).text == "几点了"


def test_audio_without_recognition_is_unanswerable():
    body = _dm(msgtype="audio", content={"duration": 4000, "downloadCode": "d", "recognition": ""})
    assert parse_message(body).text is None


@pytest.mark.parametrize(
    "msgtype, content",
    [
        ("picture", {"pictureDownloadCode": "p", "downloadCode": "d"}),
        ("video", {"duration": "8", "videoType": "mp4", "downloadCode": "d"}),
        ("file", {"spaceId": "1", "fileName": "a.pdf", "downloadCode": "d", "fileId": "f"}),
        ("unknownMsgType", {}),
        ("interactiveCard", {"whatever": 1}),
    ],
)
def test_unanswerable_types_have_no_text(msgtype, content):
    msg = parse_message(_dm(msgtype=msgtype, content=content))
    assert msg.text is None and msg.msgtype == msgtype
    inbound = to_inbound(msg)
    assert inbound.text == "" and inbound.reply_handle["answerable"] is False


def test_content_as_a_json_string_is_accepted():
    body = _dm(msgtype="audio", content=json.dumps({"recognition": "你好"}))
    assert parse_message(body).text == "你好"


@pytest.mark.parametrize(
    "content, expected",
    [
        (" 你好", "你好"),
        ("\u2005你好 ", "你好"),
        ("@机器人 你好", "你好"),
        ("@张三\u2005@李四 帮我看看", "帮我看看"),
        ("你好 @张三 谢谢", "你好 @张三 谢谢"),  # only leading mentions are noise
        ("email me@example.com", "email me@example.com"),
        ("   ", None),
        ("@机器人 ", None),
    ],
)
def test_text_mentions_and_whitespace_are_stripped(content, expected):
    assert parse_message(_dm(msgtype="text", text={"content": content})).text == expected


def test_robot_names_with_spaces_can_be_stripped():
    body = _dm(msgtype="text", text={"content": "@Switch Board  what is 2+2?"})
    assert parse_message(body, strip_names=["Switch Board"]).text == "what is 2+2?"
    assert strip_mentions("@Switch Board", ["Switch Board"]) == ""


@pytest.mark.parametrize(
    "value, expected",
    [(1695283635765, 1695283635765), ("1695283635765", 1695283635765), ("soon", None)],
)
def test_create_at_number_or_string(value, expected):
    assert (
        parse_message(_dm(msgtype="text", text={"content": "x"}, createAt=value)).create_at_ms
        == expected
    )


def test_create_a_typo_is_accepted():
    body = _dm(msgtype="text", text={"content": "x"})
    body["createA"] = body.pop("createAt")
    assert parse_message(body).create_at_ms == 1695283635765


@pytest.mark.parametrize(
    "raw, field",
    [
        (b"{not json", "body"),
        (b"[1, 2]", "body"),
        (b"\xff\xfe", None),
    ],
)
def test_bad_bodies_are_malformed(raw, field):
    with pytest.raises(MalformedPayload) as err:
        parse_message(raw)
    assert err.value.status == 400
    if field:
        assert err.value.details[0]["field"] == field


def test_missing_fields_are_all_named():
    body = _dm(msgtype="text", text={"content": "x"})
    for key in ("msgId", "msgtype", "conversationId", "senderId", "senderStaffId"):
        body.pop(key)
    body["conversationType"] = "3"
    with pytest.raises(MalformedPayload) as err:
        parse_message(body)
    fields = [d["field"] for d in err.value.details]
    assert fields == ["msgId", "msgtype", "conversationId", "senderId", "conversationType"]
    assert "msgId" in err.value.message


def test_sender_id_alone_is_enough():
    body = _dm(msgtype="text", text={"content": "x"}, senderStaffId="")
    msg = parse_message(body)
    assert to_inbound(msg).user_id == "$:LWC****PA=="


def test_to_inbound_for_a_dm():
    inbound = to_inbound(parse_message(OFFICIAL_DM))
    assert inbound.channel == "dingtalk"
    assert inbound.provider_message_id == "msgY****Pw=="
    assert inbound.user_id == "042***297"
    assert inbound.user_name == "张三"
    assert inbound.conversation_key == "dm:cide****4g="
    assert inbound.text == "hello DingTalk!"
    assert inbound.reply_handle == {
        "session_webhook": "https://oapi.dingtalk.com/robot/sendBySession?session=79b48****4d4b",
        "session_webhook_expires_ms": 1695289035996,
        "conversation_type": "1",
        "conversation_id": "cide****4g=",
        "sender_staff_id": "042***297",
        "sender_id": "$:LWC****PA==",
        "robot_code": "ding****c6gk",
        "msgtype": "text",
        "answerable": True,
    }
    # The handle is stored on a task queue: it must survive JSON.
    assert json.loads(json.dumps(inbound.reply_handle)) == inbound.reply_handle


def test_to_inbound_for_a_group():
    inbound = to_inbound(parse_message(OFFICIAL_GROUP))
    assert inbound.conversation_key == "group:xxx"
    assert inbound.user_id == "user123"
    assert inbound.text == "你好"
    assert inbound.reply_handle["conversation_type"] == "2"
    assert inbound.reply_handle["conversation_id"] == "xxx"
