"""DingTalk app robot, HTTP callback mode (PROTOCOLS.md §A, §B.6, §C).

Inbound: `verify_request` checks the `timestamp`/`sign` headers (HMAC over the timestamp
and the app secret; the body is not covered, so de-duplicate on `msgId`), then
`parse_message` turns the JSON body into a `DingTalkMessage` and `to_inbound` into the
canonical `InboundMessage`. Both raise `IngressError` subclasses (`InvalidSignature`,
`MalformedPayload`). A message the bot cannot answer (picture, file, ...) has empty text and
`reply_handle["answerable"] == False`.

Outbound: `DingTalkSender.send` answers through the message's session webhook while it is
valid, else through the robot OpenAPI (access tokens from `AccessTokenCache`), splitting
long replies with `split_message`. Failures raise `DingTalkDeliveryError` (a
`DeliveryError`): `permanent` says whether a retry can help, `retry_after_s` carries
DingTalk's throttling hints, and `delivered_chars` says where a retry should resume.
Nothing here imports Django or holds global state.
"""

from __future__ import annotations

from connectors.dingtalk.errors import THROTTLE_RETRY_AFTER_S, DingTalkDeliveryError
from connectors.dingtalk.parse import (
    CHANNEL,
    AtUser,
    DingTalkMessage,
    parse_message,
    strip_mentions,
    to_inbound,
)
from connectors.dingtalk.send import (
    DEFAULT_API_BASE,
    WEBHOOK_SAFETY_MARGIN_MS,
    DingTalkSender,
    SendResult,
)
from connectors.dingtalk.split import (
    OPENAPI_MSGPARAM_MAX_BYTES,
    SESSION_WEBHOOK_MAX_BYTES,
    split_message,
)
from connectors.dingtalk.tokens import AccessTokenCache
from connectors.dingtalk.verify import MAX_SKEW_MS, compute_sign, verify_request

__all__ = [
    "CHANNEL",
    "DEFAULT_API_BASE",
    "MAX_SKEW_MS",
    "OPENAPI_MSGPARAM_MAX_BYTES",
    "SESSION_WEBHOOK_MAX_BYTES",
    "THROTTLE_RETRY_AFTER_S",
    "WEBHOOK_SAFETY_MARGIN_MS",
    "AccessTokenCache",
    "AtUser",
    "DingTalkDeliveryError",
    "DingTalkMessage",
    "DingTalkSender",
    "SendResult",
    "compute_sign",
    "parse_message",
    "split_message",
    "strip_mentions",
    "to_inbound",
    "verify_request",
]
