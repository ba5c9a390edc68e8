"""Secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) from `cryptography`.

SWITCHBOARD_ENCRYPTION_KEY holds one or more comma-separated keys; the first encrypts
and all of them decrypt, so a key can be rotated without a flag day: put the new key
first, restart, run `manage.py rotate_encryption_key` (re-encrypts every stored secret
with it), then drop the old key.
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


@lru_cache(maxsize=4)
def _primary(key: str) -> Fernet:
    return Fernet(key.encode())


def _current() -> MultiFernet:
    return _fernet(tuple(settings.SWITCHBOARD_ENCRYPTION_KEYS))


def generate_key() -> str:
    return Fernet.generate_key().decode()


def is_current(token: str) -> bool:
    """Whether `token` was encrypted with the first key, the one that encrypts now."""
    keys = settings.SWITCHBOARD_ENCRYPTION_KEYS
    if not keys:
        raise ValueError("SWITCHBOARD_ENCRYPTION_KEY is empty")
    try:
        _primary(keys[0]).decrypt(token.encode())
    except InvalidToken:
        return False
    return True


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
