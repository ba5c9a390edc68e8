"""Tmall Genie (AliGenie) custom skill, v1 TaskQuery/ResultModel protocol (PROTOCOLS.md §D.1).

The contract of this folder, like every connector's:
- inbound: `parse_query` turns the raw POST body into an `AliGenieQuery` or raises an
  `IngressError` (413 too large, 400 malformed, 401 undecryptable or unencrypted where
  encryption is required); `check_skill` pins the skill id (401); `to_inbound` maps the
  query to the platform's `InboundMessage`.
- outbound: there is none. AliGenie waits for the HTTP response, so the reply is the
  `result`/`ask`/`failure` ResultModel JSON returned to the same request, with its text
  passed through `voice_text` first. The response deadline is UNKNOWN (keep it short).
- `ownership`: the `/aligenie/<hash>.txt` proof file the console fetches on save.

AliGenie signs no request; authentication is the secret URL token, the skill id and,
when configured, the RSA-encrypted body. Nothing here imports Django.
"""

from __future__ import annotations

from connectors.aligenie.crypto import encrypt_query, load_private_key, public_key_pem
from connectors.aligenie.ownership import (
    ownership_url_path,
    validate_ownership_content,
    validate_ownership_filename,
)
from connectors.aligenie.parse import (
    CHANNEL,
    AliGenieQuery,
    check_skill,
    parse_query,
    prompt_text,
    provider_message_id,
    to_inbound,
)
from connectors.aligenie.response import ask, failure, result, voice_text

__all__ = [
    "CHANNEL",
    "AliGenieQuery",
    "ask",
    "check_skill",
    "encrypt_query",
    "failure",
    "load_private_key",
    "ownership_url_path",
    "parse_query",
    "prompt_text",
    "provider_message_id",
    "public_key_pem",
    "result",
    "to_inbound",
    "validate_ownership_content",
    "validate_ownership_filename",
    "voice_text",
]
