"""The contract every connector folder fulfils.

Inbound, a connector turns a provider's raw request into one `InboundMessage` or raises
`IngressError` saying why (the HTTP status belongs to the error, so every ingress answers
bad input the same way). Outbound, it raises `DeliveryError`, whose `permanent` flag says
whether retrying could ever help.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class InboundMessage:
    """One end-user message in canonical form, whichever channel it came from."""

    channel: str
    provider_message_id: str
    user_id: str
    conversation_key: str
    text: str
    user_name: str = ""
    # Whatever the channel needs later to answer (session webhook, callback URL, ...).
    reply_handle: dict[str, Any] = field(default_factory=dict)


class IngressError(Exception):
    """Bad inbound input. `status` is the HTTP status, `code` a stable machine name."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class InvalidSignature(IngressError):
    status = 401
    code = "invalid_signature"


class MalformedPayload(IngressError):
    status = 400
    code = "malformed_payload"


class WrongTarget(IngressError):
    """Authentic-looking, but meant for another robot, corporation or skill."""

    status = 403
    code = "wrong_target"


class PayloadTooLarge(IngressError):
    status = 413
    code = "payload_too_large"


class RateLimited(IngressError):
    """The sender is over a rate limit; `retry_after_s` says when to try again."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeliveryError(Exception):
    """An outbound send failed. Permanent failures must not be retried."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        status_code: int | None = None,
        retry_after_s: float | None = None,
        response_excerpt: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.status_code = status_code
        self.response_excerpt = response_excerpt
        # The provider said when to come back (throttling); None: the caller's backoff.
        self.retry_after_s = retry_after_s
