"""Generic signed webhooks, inbound and outbound, on the Standard Webhooks spec."""

from __future__ import annotations

from connectors.webhook.inbound import WebhookPayload, parse_inbound, verify_and_parse
from connectors.webhook.outbound import (
    WebhookSender,
    generate_secret,
    sign_headers,
)

__all__ = [
    "WebhookPayload",
    "WebhookSender",
    "generate_secret",
    "parse_inbound",
    "sign_headers",
    "verify_and_parse",
]
