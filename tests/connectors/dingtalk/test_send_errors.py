"""`DingTalkSender` failures against the fake: each DingTalk error, permanent or
retryable, with the retry delay DingTalk asks for."""

from __future__ import annotations

import socket

import pytest

from connectors.base import DeliveryError
from connectors.dingtalk import DingTalkDeliveryError, DingTalkSender
from tests.connectors.dingtalk.helpers import STAFF, expire, make_handle, send

# -- error classification ----------------------------------------------------------


@pytest.mark.parametrize(
    "errcode, permanent, retry_after",
    [
        (130101, False, 60.0),
        (410100, False, 60.0),
        (310000, True, None),
        (300001, True, None),
        (-1, False, None),
    ],
)
def test_webhook_errcodes(sender, ding, errcode, permanent, retry_after):
    ding.webhook_error(errcode, "keywords not in content" if errcode == 310000 else "err")
    with pytest.raises(DingTalkDeliveryError) as err:
        send(sender, ding, make_handle(ding), "x")
    assert err.value.permanent is permanent
    assert err.value.retry_after_s == retry_after
    assert err.value.code == str(errcode) and str(errcode) in err.value.message
    assert ding.sent == []


def test_throttle_knob_then_success(sender, ding):
    ding.throttle_session_webhook(2)
    handle = make_handle(ding)
    for _ in range(2):
        with pytest.raises(DeliveryError) as err:
            send(sender, ding, handle, "x")
        assert not err.value.permanent and err.value.retry_after_s == 60.0
    assert send(sender, ding, handle, "x").parts == 1


def test_310000_message_carries_the_errmsg(sender, ding):
    ding.webhook_error(310000, "ip 1.2.3.4 not in whitelist")
    with pytest.raises(DeliveryError, match="not in whitelist"):
        send(sender, ding, make_handle(ding), "x")


def test_expired_session_token_is_permanent(sender, ding):
    handle = make_handle(ding)
    ding.expire_session(handle["session_webhook"].rsplit("=", 1)[1])
    with pytest.raises(DeliveryError, match="300001") as err:
        send(sender, ding, handle, "x")
    assert err.value.permanent


@pytest.mark.parametrize(
    "status, retry_after, permanent, expected_after",
    [
        (429, "5", False, 5.0),
        (429, None, False, 60.0),
        (502, None, False, None),
        (404, None, True, None),
    ],
)
def test_webhook_http_errors(sender, ding, status, retry_after, permanent, expected_after):
    ding.fail_http("session_webhook", status, retry_after=retry_after)
    with pytest.raises(DeliveryError) as err:
        send(sender, ding, make_handle(ding), "x")
    assert err.value.permanent is permanent and err.value.status_code == status
    assert err.value.retry_after_s == expected_after


@pytest.mark.parametrize(
    "status, code, retry_after, permanent, expected_after",
    [
        (429, None, "3", False, 3.0),
        (429, None, None, False, 60.0),
        (403, None, None, False, 60.0),
        (403, "Forbidden.AccessDenied.QpsLimitForApi", "2", False, 2.0),
        (403, "Forbidden.AccessDenied.AccessTokenPermissionDenied", None, True, None),
        (500, None, None, False, None),
        (400, "invalid.openConversationId", None, True, None),
        (400, "invalidParameter.userIds.overMax", None, True, None),
    ],
)
def test_openapi_http_errors(
    sender, ding, clock, status, code, retry_after, permanent, expected_after
):
    handle = make_handle(ding)
    expire(clock)
    ding.fail_http("oto", status, code=code, retry_after=retry_after)
    with pytest.raises(DingTalkDeliveryError) as err:
        send(sender, ding, handle, "x")
    assert err.value.permanent is permanent
    assert err.value.retry_after_s == expected_after
    assert err.value.status_code == status
    if code:
        assert err.value.code == code and code in err.value.message


def test_stopped_bot_is_permanent(sender, ding, clock):
    handle = make_handle(ding, group=True)
    expire(clock)
    ding.stop_bot()
    with pytest.raises(DeliveryError, match=r"bot\.stopped") as err:
        send(sender, ding, handle, "x")
    assert err.value.permanent


def test_unknown_robot_code_is_permanent(sender, ding, clock):
    handle = make_handle(ding)
    expire(clock)
    with pytest.raises(DeliveryError, match=r"invalidParameter\.robotCode\.notExsit") as err:
        send(sender, ding, handle, "x", robot_code="dingnosuchrobot")
    assert err.value.permanent and err.value.status_code == 400


def test_missing_robot_code_is_permanent_before_any_request(sender, ding, clock):
    handle = {**make_handle(ding), "robot_code": ""}
    expire(clock)
    with pytest.raises(DeliveryError, match="robotCode") as err:
        send(sender, ding, handle, "x", robot_code="")
    assert err.value.permanent and ding.requests == []


def test_flow_controlled_user_is_retryable(sender, ding, clock):
    handle = make_handle(ding)
    expire(clock)
    ding.flow_control(STAFF)
    with pytest.raises(DingTalkDeliveryError) as err:
        send(sender, ding, handle, "x")
    assert not err.value.permanent and err.value.retry_after_s == 60.0
    assert err.value.code == "flowControlledStaffIdList" and ding.sent == []


def test_invalid_staff_id_is_permanent(sender, ding, clock):
    handle = make_handle(ding)
    expire(clock)
    ding.invalid_staff(STAFF)
    with pytest.raises(DeliveryError, match="invalidStaffIdList") as err:
        send(sender, ding, handle, "x")
    assert err.value.permanent


def test_network_failure_is_retryable(client, ding, clock):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sender = DingTalkSender(client, api_base=f"http://127.0.0.1:{port}", clock=clock)
    expire(clock)
    with pytest.raises(DeliveryError) as err:
        send(sender, ding, make_handle(ding), "x")
    assert not err.value.permanent


def test_empty_reply_is_permanent(sender, ding):
    with pytest.raises(DeliveryError, match="empty") as err:
        send(sender, ding, make_handle(ding), " \n ")
    assert err.value.permanent
