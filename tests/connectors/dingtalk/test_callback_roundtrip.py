"""The fake's signed callbacks through verify + parse, and the token cache under threads."""

from __future__ import annotations

import threading

import httpx
import pytest

from connectors.base import InvalidSignature
from connectors.dingtalk import AccessTokenCache, parse_message, to_inbound, verify_request


@pytest.mark.parametrize(
    "msgtype, conversation_type, expected",
    [
        ("text", "1", "hello there"),
        ("text", "2", "hello there"),
        ("richText", "2", "hello there"),
        ("audio", "1", "hello there"),
        ("picture", "1", None),
        ("video", "1", None),
        ("file", "1", None),
    ],
)
def test_make_callback_verifies_and_parses(ding, msgtype, conversation_type, expected):
    headers, body = ding.make_callback(
        msgtype=msgtype, conversation_type=conversation_type, text="hello there", now_ms=1_000
    )
    verify_request(
        timestamp=headers["timestamp"],
        sign=headers["sign"],
        app_secret=ding.app_secret,
        now_ms=1_000,
    )
    msg = parse_message(body)
    assert msg.text == expected and msg.msgtype == msgtype
    inbound = to_inbound(msg)
    prefix = "group" if conversation_type == "2" else "dm"
    assert inbound.conversation_key.startswith(f"{prefix}:")
    assert inbound.reply_handle["session_webhook"].startswith(ding.base_url)
    assert inbound.reply_handle["session_webhook_expires_ms"] == 1_000 + 5_400_000


def test_make_callback_with_another_secret_fails_verification(ding):
    headers, _ = ding.make_callback(app_secret="someone-else", now_ms=5)
    with pytest.raises(InvalidSignature):
        verify_request(
            timestamp=headers["timestamp"],
            sign=headers["sign"],
            app_secret=ding.app_secret,
            now_ms=5,
        )


def test_message_ids_are_unique_and_extra_overrides(ding):
    _, a = ding.make_callback()
    _, b = ding.make_callback(extra={"senderNick": "李四"})
    assert parse_message(a).msg_id != parse_message(b).msg_id
    assert parse_message(b).sender_nick == "李四"


def test_concurrent_token_requests_share_one_call(ding):
    with httpx.Client(trust_env=False) as client:
        cache = AccessTokenCache(client, api_base=ding.base_url, clock=lambda: 0.0)
        tokens: list[str] = []
        barrier = threading.Barrier(8)

        def worker() -> None:
            barrier.wait()
            tokens.append(cache.get(ding.app_key, ding.app_secret))

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(set(tokens)) == 1 and len(tokens) == 8
    assert ding.token_calls == 1


def test_changed_secret_does_not_reuse_the_cached_token(ding):
    ding.register_app("other-key", "s1")
    with httpx.Client(trust_env=False) as client:
        cache = AccessTokenCache(client, api_base=ding.base_url, clock=lambda: 0.0)
        first = cache.get("other-key", "s1")
        ding.register_app("other-key", "s2")
        assert cache.get("other-key", "s2") != first
    assert ding.token_calls == 2


def test_reset_and_wait_for_sent(ding):
    ding.throttle_session_webhook(3)
    ding.reset()
    url = ding.session_webhook_url("tok")
    httpx.post(url, json={"msgtype": "text", "text": {"content": "hi"}}, trust_env=False)
    [sent] = ding.wait_for_sent(1, timeout=2)
    assert sent.via == "session_webhook" and sent.session == "tok" and sent.text == "hi"
    with pytest.raises(AssertionError, match="wanted 2"):
        ding.wait_for_sent(2, timeout=0.1)
