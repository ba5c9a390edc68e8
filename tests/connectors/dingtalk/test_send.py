"""`DingTalkSender` against the fake DingTalk: which path, tokens, and long replies."""

from __future__ import annotations

import json

import pytest

from connectors.base import DeliveryError
from connectors.dingtalk import (
    OPENAPI_MSGPARAM_MAX_BYTES,
    SESSION_WEBHOOK_MAX_BYTES,
    DingTalkDeliveryError,
    DingTalkSender,
)
from tests.connectors.dingtalk.helpers import STAFF, expire, make_handle, send

# -- session webhook ---------------------------------------------------------------


def test_dm_reply_goes_through_the_session_webhook(sender, ding):
    result = send(sender, ding, make_handle(ding), "答案是 2")
    assert (result.via, result.parts, result.process_query_keys) == ("session_webhook", 1, [])
    [sent] = ding.sent
    assert sent.via == "session_webhook" and sent.msgtype == "text"
    assert sent.body == {"msgtype": "text", "text": {"content": "答案是 2"}}
    assert ding.token_calls == 0


def test_group_text_reply_mentions_the_asker(sender, ding):
    send(sender, ding, make_handle(ding, group=True), "hi")
    [sent] = ding.sent
    assert sent.body == {"msgtype": "text", "text": {"content": "hi"}, "at": {"atUserIds": [STAFF]}}


def test_group_markdown_reply_mentions_in_text_and_at(sender, ding):
    send(
        sender, ding, make_handle(ding, group=True), "#### 结果\n> 2", fmt="markdown", title="结果"
    )
    [sent] = ding.sent
    assert sent.msgtype == "markdown" and sent.title == "结果"
    assert sent.text == f"@{STAFF} #### 结果\n> 2"
    assert sent.at_user_ids == [STAFF]


def test_webhook_is_used_until_one_minute_before_expiry(sender, ding, clock):
    handle = make_handle(ding)
    expires_s = handle["session_webhook_expires_ms"] / 1000
    clock.now = expires_s - 60.001
    assert send(sender, ding, handle, "a").via == "session_webhook"
    clock.now = expires_s - 60
    assert send(sender, ding, handle, "b").via == "openapi"


def test_webhook_outside_dingtalk_is_not_trusted(sender, ding):
    handle = {
        **make_handle(ding),
        "session_webhook": "https://evil.example/robot/sendBySession?session=x",
    }
    assert send(sender, ding, handle, "hi").via == "openapi"


# -- OpenAPI -------------------------------------------------------------------------


def test_expired_dm_uses_batchsend(sender, ding, clock):
    handle = make_handle(ding)
    expire(clock)
    result = send(sender, ding, handle, "late answer")
    assert result.via == "openapi" and len(result.process_query_keys) == 1
    [sent] = ding.sent
    assert sent.via == "oto"
    assert sent.body["robotCode"] == ding.robot_code
    assert sent.body["userIds"] == [STAFF]
    assert sent.body["msgKey"] == "sampleText"
    assert json.loads(sent.body["msgParam"]) == {"content": "late answer"}


def test_expired_group_uses_group_send_with_markdown(sender, ding, clock):
    handle = make_handle(ding, group=True)
    expire(clock)
    send(sender, ding, handle, "**2**", fmt="markdown", title="结果")
    [sent] = ding.sent
    assert sent.via == "group"
    assert sent.body["openConversationId"] == handle["conversation_id"]
    assert sent.body["msgKey"] == "sampleMarkdown"
    assert json.loads(sent.body["msgParam"]) == {"title": "结果", "text": "**2**"}


def test_expired_dm_without_staff_id_is_permanent(sender, ding, clock):
    handle = make_handle(ding, sender_staff_id="")
    expire(clock)
    with pytest.raises(DeliveryError, match="senderStaffId") as err:
        send(sender, ding, handle, "x")
    assert err.value.permanent
    assert ding.requests == []


def test_token_is_cached_then_refreshed_five_minutes_before_expiry(sender, ding, clock):
    handle = make_handle(ding)
    expire(clock)
    for text in ("one", "two", "three"):
        send(sender, ding, handle, text)
    assert ding.token_calls == 1 and len(ding.sent) == 3
    clock.now += 7200 - 300 - 1
    send(sender, ding, handle, "still cached")
    assert ding.token_calls == 1
    clock.now += 2
    send(sender, ding, handle, "refreshed")
    assert ding.token_calls == 2
    assert ding.sent[-1].token != ding.sent[0].token


def test_revoked_token_is_replaced_once_transparently(sender, ding, clock):
    handle = make_handle(ding)
    expire(clock)
    send(sender, ding, handle, "one")
    ding.revoke_tokens()
    send(sender, ding, handle, "two")
    assert ding.token_calls == 2 and [s.text for s in ding.sent] == ["one", "two"]
    assert ("oto", 400) in ding.requests


def test_wrong_app_secret_is_permanent(client, ding, clock):
    sender = DingTalkSender(client, api_base=ding.base_url, clock=clock)
    expire(clock)
    with pytest.raises(DeliveryError) as err:
        sender.send(
            handle=make_handle(ding),
            text="x",
            app_key=ding.app_key,
            app_secret="wrong",
            robot_code=ding.robot_code,
        )
    assert err.value.permanent and err.value.status_code == 400


@pytest.mark.parametrize(
    "status, retry_after, expected",
    [(503, None, None), (429, "7", 7.0), (429, None, 60.0)],
)
def test_token_endpoint_outages_are_retryable(sender, ding, clock, status, retry_after, expected):
    handle = make_handle(ding)
    expire(clock)
    ding.fail_http("token", status, retry_after=retry_after)
    with pytest.raises(DeliveryError) as err:
        send(sender, ding, handle, "x")
    assert not err.value.permanent and err.value.retry_after_s == expected


# -- long replies ------------------------------------------------------------------


def _long_text(paragraphs: int) -> str:
    return "\n\n".join(
        f"第{i}段。" + "这是一个很长的句子，用来测试分段。" * 40 for i in range(paragraphs)
    )


def test_long_webhook_reply_is_split_in_order(sender, ding):
    ding.webhook_max_bytes = SESSION_WEBHOOK_MAX_BYTES
    text = _long_text(8)
    result = send(sender, ding, make_handle(ding, group=True), text)
    assert result.parts == len(ding.sent) > 2
    assert all(len(s.text.encode()) <= SESSION_WEBHOOK_MAX_BYTES for s in ding.sent)
    assert "".join(s.text for s in ding.sent).replace("\n", "") == text.replace("\n", "")
    # The asker is mentioned once, on the first part.
    assert [bool(s.at_user_ids) for s in ding.sent] == [True] + [False] * (result.parts - 1)


def test_long_markdown_with_mention_stays_within_the_limit(sender, ding):
    ding.webhook_max_bytes = SESSION_WEBHOOK_MAX_BYTES
    send(sender, ding, make_handle(ding, group=True), "x" * 10_000, fmt="markdown")
    assert ding.sent[0].text.startswith(f"@{STAFF} ")
    assert all(len(s.text.encode()) <= SESSION_WEBHOOK_MAX_BYTES for s in ding.sent)


def test_long_openapi_reply_is_split_by_msgparam_bytes(sender, ding, clock):
    handle = make_handle(ding, group=True)
    expire(clock)
    # Quotes and newlines grow under JSON escaping; the msgParam limit must still hold.
    text = ('He said "hi"\n' * 3000) + _long_text(10)
    result = send(sender, ding, handle, text, fmt="markdown", title="长回答")
    assert result.via == "openapi" and result.parts == len(ding.sent) > 2
    assert len(result.process_query_keys) == result.parts
    assert all(len(s.body["msgParam"].encode()) <= OPENAPI_MSGPARAM_MAX_BYTES for s in ding.sent)
    assert "".join(s.text for s in ding.sent).replace("\n", "") == text.replace("\n", "")


def test_failed_part_reports_progress_so_a_retry_resumes(sender, ding):
    handle = make_handle(ding)
    text = _long_text(6)
    ding.throttle_session_webhook(1, after=1)
    with pytest.raises(DingTalkDeliveryError) as err:
        send(sender, ding, handle, text)
    assert err.value.parts_sent == 1 and len(ding.sent) == 1
    assert 0 < err.value.delivered_chars < len(text)
    send(sender, ding, handle, text[err.value.delivered_chars :])
    assert "".join(s.text for s in ding.sent).replace("\n", "") == text.replace("\n", "")
