"""DingTalk app-robot callback bodies (PROTOCOLS.md §A.3) to `InboundMessage`.

Parsing is lenient where DingTalk itself is inconsistent (`createAt` as number or string,
the `createA` typo seen in the wild, `content` sometimes JSON-encoded) and strict only on
the fields without which the message cannot be attributed or answered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from connectors.base import InboundMessage, MalformedPayload

CHANNEL = "dingtalk"
CONVERSATION_DM = "1"
CONVERSATION_GROUP = "2"

# `@name` then whitespace (DingTalk puts U+2005 or a space after a mention) or the end: a
# message that is only mentions asks nothing.
_LEADING_MENTION = re.compile(r"^@[^\s@]+(?:\s+|$)")


@dataclass(frozen=True)
class AtUser:
    dingtalk_id: str
    staff_id: str = ""
    union_id: str = ""


@dataclass(frozen=True)
class DingTalkMessage:
    msg_id: str
    msgtype: str
    # What the bot should answer, or None when this message type cannot be answered.
    text: str | None
    conversation_type: str
    conversation_id: str
    conversation_title: str
    sender_id: str
    sender_staff_id: str
    sender_nick: str
    sender_corp_id: str
    session_webhook: str
    session_webhook_expires_ms: int | None
    robot_code: str
    chatbot_corp_id: str
    chatbot_user_id: str
    create_at_ms: int | None
    at_users: tuple[AtUser, ...] = ()

    @property
    def is_group(self) -> bool:
        return self.conversation_type == CONVERSATION_GROUP


def parse_message(
    raw: bytes | str | Mapping[str, Any], *, strip_names: Iterable[str] = ()
) -> DingTalkMessage:
    """Parse one callback body. `strip_names`: extra @-names to strip (e.g. a robot name
    with spaces in it, which the generic `@word` rule cannot see the end of)."""
    body = _load(raw)
    details: list[dict[str, str]] = []
    msg_id = _required_str(body, "msgId", details)
    msgtype = _required_str(body, "msgtype", details)
    conversation_id = _required_str(body, "conversationId", details)
    sender_id = _str(body, "senderId")
    sender_staff_id = _str(body, "senderStaffId")
    if not sender_id and not sender_staff_id:
        details.append({"field": "senderId", "message": "senderId or senderStaffId is required"})
    conversation_type = str(body.get("conversationType", "")).strip()
    if conversation_type not in (CONVERSATION_DM, CONVERSATION_GROUP):
        details.append({"field": "conversationType", "message": 'must be "1" (1:1) or "2" (group)'})
    if details:
        fields = ", ".join(d["field"] for d in details)
        raise MalformedPayload(
            f"DingTalk message is missing or has invalid fields: {fields}", details=details
        )
    return DingTalkMessage(
        msg_id=msg_id,
        msgtype=msgtype,
        text=_answerable_text(body, msgtype, tuple(strip_names)),
        conversation_type=conversation_type,
        conversation_id=conversation_id,
        conversation_title=_str(body, "conversationTitle"),
        sender_id=sender_id,
        sender_staff_id=sender_staff_id,
        sender_nick=_str(body, "senderNick"),
        sender_corp_id=_str(body, "senderCorpId"),
        session_webhook=_str(body, "sessionWebhook"),
        session_webhook_expires_ms=_millis(body.get("sessionWebhookExpiredTime")),
        robot_code=_str(body, "robotCode"),
        chatbot_corp_id=_str(body, "chatbotCorpId"),
        chatbot_user_id=_str(body, "chatbotUserId"),
        create_at_ms=_millis(body.get("createAt", body.get("createA"))),
        at_users=_at_users(body.get("atUsers")),
    )


def to_inbound(msg: DingTalkMessage) -> InboundMessage:
    prefix = "group" if msg.is_group else "dm"
    return InboundMessage(
        channel=CHANNEL,
        provider_message_id=msg.msg_id,
        # senderStaffId is the stable corp userId; it is empty for external users, whose
        # only identity is the (encrypted, per-robot) senderId.
        user_id=msg.sender_staff_id or msg.sender_id,
        user_name=msg.sender_nick,
        conversation_key=f"{prefix}:{msg.conversation_id}",
        text=msg.text or "",
        reply_handle={
            "session_webhook": msg.session_webhook,
            "session_webhook_expires_ms": msg.session_webhook_expires_ms,
            "conversation_type": msg.conversation_type,
            "conversation_id": msg.conversation_id,
            "sender_staff_id": msg.sender_staff_id,
            "sender_id": msg.sender_id,
            "robot_code": msg.robot_code,
            "msgtype": msg.msgtype,
            "answerable": bool(msg.text),
        },
    )


def _load(raw: bytes | str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(raw, Mapping):
        return raw
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedPayload("request body is not valid UTF-8") from None
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise MalformedPayload(
            f"request body is not valid JSON: {exc.msg} at {exc.pos}",
            details=[{"field": "body", "message": "invalid JSON"}],
        ) from None
    if not isinstance(body, dict):
        raise MalformedPayload(
            "request body must be a JSON object",
            details=[{"field": "body", "message": "expected an object"}],
        )
    return body


def _str(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if isinstance(value, str):
        return value
    # Numbers appear where the docs say string; anything else is treated as absent.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


def _required_str(body: Mapping[str, Any], key: str, details: list[dict[str, str]]) -> str:
    value = _str(body, key).strip()
    if not value:
        details.append({"field": key, "message": "required non-empty string"})
    return value


def _millis(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    return None


def _at_users(value: object) -> tuple[AtUser, ...]:
    if not isinstance(value, list):
        return ()
    users = []
    for item in value:
        if isinstance(item, dict) and isinstance(item.get("dingtalkId"), str):
            users.append(
                AtUser(
                    dingtalk_id=item["dingtalkId"],
                    staff_id=_str(item, "staffId"),
                    union_id=_str(item, "unionId"),
                )
            )
    return tuple(users)


def _content(body: Mapping[str, Any]) -> Mapping[str, Any]:
    content = body.get("content")
    # Stream-mode and some relays deliver `content` as a JSON-encoded string.
    if isinstance(content, str):
        try:
            content = json.loads(content)
        except json.JSONDecodeError:
            return {}
    return content if isinstance(content, dict) else {}


def _answerable_text(body: Mapping[str, Any], msgtype: str, names: tuple[str, ...]) -> str | None:
    if msgtype == "text":
        text_obj = body.get("text")
        raw = text_obj.get("content") if isinstance(text_obj, dict) else None
        text = raw if isinstance(raw, str) else ""
    elif msgtype == "richText":
        parts = _content(body).get("richText")
        texts = [
            p["text"]
            for p in (parts if isinstance(parts, list) else [])
            if isinstance(p, dict)
            and isinstance(p.get("text"), str)
            and p.get("type", "text") == "text"
        ]
        # Separate text runs are separated by pictures or line breaks in the editor.
        text = "\n".join(t.strip() for t in texts if t.strip())
    elif msgtype == "audio":
        recognition = _content(body).get("recognition")
        text = recognition if isinstance(recognition, str) else ""
    else:
        # picture, video, file, unknownMsgType and anything newer: nothing to answer.
        return None
    text = strip_mentions(text, names)
    return text or None


def strip_mentions(text: str, names: Iterable[str] = ()) -> str:
    """Drop the whitespace and leading @-mentions DingTalk leaves in front of the question.

    DingTalk removes the robot's own mention but keeps the space after it (" 你好");
    mentions of other members stay as `@nick` at the front.
    """
    text = text.strip()
    names = tuple(f"@{n}" for n in names if n)
    while text.startswith("@"):
        for name in names:
            if text.startswith(name) and (len(text) == len(name) or text[len(name)].isspace()):
                text = text[len(name) :].lstrip()
                break
        else:
            match = _LEADING_MENTION.match(text)
            if not match:
                break
            text = text[match.end() :]
    return text
