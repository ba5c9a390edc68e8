"""The platform's own replies when admission refuses a message, per reason and language.

A tenant overrides any of them in `Tenant.refusal_replies` ({reason: {language: text}});
the bot's `language` picks the text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAU_LIMIT = "mau_limit"
RATE_LIMITED = "rate_limited"
QUOTA_EXHAUSTED = "quota_exhausted"
CONNECTOR_NOT_LICENSED = "connector_not_licensed"

DEFAULTS: dict[str, dict[str, str]] = {
    MAU_LIMIT: {
        "zh-hans": "抱歉，本服务的用户数已达到上限，暂时无法为新用户提供服务。",
        "en": "Sorry, this service has reached its user limit and cannot take new users right now.",
    },
    RATE_LIMITED: {
        "zh-hans": "消息发送太快了，请稍后再试。",
        "en": "You are sending messages too quickly. Please wait a moment and try again.",
    },
    QUOTA_EXHAUSTED: {
        "zh-hans": "抱歉，本月的使用额度已用完。",
        "en": "Sorry, this service has used up its quota for this month.",
    },
    CONNECTOR_NOT_LICENSED: {
        "zh-hans": "抱歉，此渠道未获授权。",
        "en": "Sorry, this channel is not licensed for this service.",
    },
}
FALLBACK_LANGUAGE = "en"


def refusal_text(reason: str, language: str, overrides: Mapping[str, Any] | None) -> str:
    """The tenant's text for `reason` in `language`, else the built-in one."""
    custom = (overrides or {}).get(reason)
    if isinstance(custom, Mapping):
        text = custom.get(language) or custom.get(FALLBACK_LANGUAGE)
        if isinstance(text, str) and text.strip():
            return text
    built_in = DEFAULTS[reason]
    return built_in.get(language) or built_in[FALLBACK_LANGUAGE]
