"""Secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) from `cryptography`.

SWITCHBOARD_ENCRYPTION_KEY holds one or more comma-separated keys; the first encrypts
and all of them decrypt, so a key can be rotated without a flag day.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ValueError("SWITCHBOARD_ENCRYPTION_KEY is empty")
    return MultiFernet([Fernet(key.encode()) for key in keys])


def _current() -> MultiFernet:
    return _fernet(tuple(settings.SWITCHBOARD_ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    return _current().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _current().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ValueError(
            "a stored secret cannot be decrypted with SWITCHBOARD_ENCRYPTION_KEY "
            "(was the key changed without keeping the old one?)"
        ) from None
