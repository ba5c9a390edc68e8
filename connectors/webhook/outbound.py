"""Outbound signed webhooks: Standard-Webhooks-signed POSTs to a tenant's callback URL.

Retrying belongs to the caller (a Celery task with exponential backoff); this module
makes one attempt and says whether another could succeed.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from connectors.base import DeliveryError
from connectors.netguard import UnsafeURL

USER_AGENT = "Switchboard-Webhooks/1.0"


def generate_secret() -> str:
    """A new `whsec_` secret: 32 random bytes (the spec allows 24 to 64)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign_headers(
    *, secret: str, event_id: str, body: str, at: datetime | None = None
) -> dict[str, str]:
    at = at or datetime.now(tz=UTC)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(event_id, at, body),
    }


EXCERPT_CHARS = 300


@dataclass(frozen=True)
class DeliveryResult:
    status_code: int
    elapsed_ms: float
    response_excerpt: str = ""


class WebhookSender:
    """Sends one signed event. The httpx client is passed in so callers own pooling."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def send(
        self, *, url: str, secret: str, event_id: str, payload: dict[str, Any], timeout: float
    ) -> DeliveryResult:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        headers = sign_headers(secret=secret, event_id=event_id, body=body)
        headers["content-type"] = "application/json"
        headers["user-agent"] = USER_AGENT
        try:
            response = self._client.post(
                url, content=body.encode(), headers=headers, timeout=timeout
            )
        except UnsafeURL as exc:
            # The callback URL points somewhere tenants may not reach (SSRF guard).
            raise DeliveryError(f"callback URL refused: {exc}", permanent=True) from exc
        except httpx.TimeoutException as exc:
            raise DeliveryError(
                f"callback timed out after {timeout}s: {exc}", permanent=False
            ) from exc
        except httpx.HTTPError as exc:
            raise DeliveryError(f"callback failed: {exc}", permanent=False) from exc
        excerpt = response.text[:EXCERPT_CHARS]
        if 200 <= response.status_code < 300:
            return DeliveryResult(
                response.status_code, response.elapsed.total_seconds() * 1000, excerpt
            )
        # 410 Gone is the Standard Webhooks way for a receiver to say "stop sending".
        permanent = response.status_code == 410
        raise DeliveryError(
            f"callback answered HTTP {response.status_code}",
            permanent=permanent,
            status_code=response.status_code,
            response_excerpt=excerpt,
        )
