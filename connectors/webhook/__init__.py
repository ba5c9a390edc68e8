"""Generic signed webhooks, inbound and outbound, on the Standard Webhooks spec."""

from __future__ import annotations

from connectors.webhook.inbound import WebhookPayload, parse_inbound, verify_and_parse
from connectors.webhook.outbound import (
    WebhookSender,
    generate_secret,
    sign_headers,
)
from connectors.webhook.profiles import Profile, sign, verify_and_parse_profile
from connectors.webhook.schedule import RETRY_SCHEDULE_S, max_attempts, next_delay

__all__ = [
    "RETRY_SCHEDULE_S",
    "Profile",
    "WebhookPayload",
    "WebhookSender",
    "generate_secret",
    "max_attempts",
    "next_delay",
    "parse_inbound",
    "sign",
    "sign_headers",
    "verify_and_parse",
    "verify_and_parse_profile",
]
