"""The optional RSA-encrypted request body (`securityQuery`, PROTOCOLS.md §D.1 item 2).

AliGenie encrypts the TaskQuery JSON with the developer's RSA public key, PKCS#1 v1.5, in
independent blocks (1024-bit key: 117-byte plaintext chunks, 128-byte ciphertext blocks),
concatenates the blocks and base64-encodes the result. We decrypt block by block with the
private key and concatenate the plaintext. The block size is the key's modulus length, so
a 2048-bit key (256-byte blocks) works the same way.

Every way decryption can go wrong (bad base64, a length that is not whole blocks, a
block the key rejects, plaintext that is not a UTF-8 JSON object) gets the same error and
the same message. Distinguishing them would turn the endpoint into a PKCS#1 v1.5 padding
oracle (Bleichenbacher) for anyone replaying captured ciphertexts. OpenSSL's implicit
rejection already makes a wrong-key block decrypt to deterministic garbage rather than
fail, which is why the JSON check is part of "could not decrypt".
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from connectors.base import InvalidSignature

UNDECRYPTABLE = (
    "securityQuery could not be decrypted with this connector's private key: the sender "
    "does not hold the matching public key, or the ciphertext is corrupted"
)


def load_private_key(private_key_pem: str) -> rsa.RSAPrivateKey:
    """Load the connector's RSA private key (PKCS#8 or PKCS#1 PEM, unencrypted).

    A bad key is the operator's configuration error, not the sender's, so this raises
    `ValueError` (the ingress answers 500) rather than an `IngressError`.
    """
    try:
        key = serialization.load_pem_private_key(private_key_pem.encode("utf-8"), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError(
            f"the AliGenie connector's private key is not a usable unencrypted PEM: {exc}"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the AliGenie connector's private key must be an RSA key")
    if key.key_size < 1024:
        raise ValueError("the AliGenie connector's RSA key must be at least 1024 bits")
    return key


def public_key_pem(private_key_pem: str) -> str:
    """The SubjectPublicKeyInfo PEM to paste into the AliGenie console for this key."""
    key = load_private_key(private_key_pem)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def block_size(key: rsa.RSAPrivateKey) -> int:
    """Ciphertext block length in bytes: the modulus length (128 for 1024-bit keys)."""
    return (key.key_size + 7) // 8


def decrypt_security_query(security_query: str, key: rsa.RSAPrivateKey) -> dict[str, Any]:
    """Decrypt a `securityQuery` value into the TaskQuery JSON object it carries.

    Raises `InvalidSignature` (401) with one fixed message whatever went wrong (see the
    module docstring for why the causes are not told apart).
    """
    # MIME-style encoders break base64 into lines; the SDK's decoder skips whitespace.
    compact = "".join(security_query.split())
    try:
        ciphertext = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSignature(UNDECRYPTABLE) from None
    size = block_size(key)
    if not ciphertext or len(ciphertext) % size:
        raise InvalidSignature(UNDECRYPTABLE)
    chunks: list[bytes] = []
    failed = False
    for start in range(0, len(ciphertext), size):
        try:
            chunks.append(key.decrypt(ciphertext[start : start + size], padding.PKCS1v15()))
        except ValueError:
            # Keep going: stopping at the first bad block would leak its position in the
            # response time.
            failed = True
    if failed:
        raise InvalidSignature(UNDECRYPTABLE)
    try:
        query = json.loads(b"".join(chunks).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidSignature(UNDECRYPTABLE) from None
    if not isinstance(query, dict):
        raise InvalidSignature(UNDECRYPTABLE)
    return query


def encrypt_query(query: bytes, public_pem: str) -> dict[str, Any]:
    """The encrypted request body AliGenie would send for `query` (for test tools).

    PKCS#1 v1.5 carries at most key bytes − 11 per block (117 for a 1024-bit key).
    """
    key = serialization.load_pem_public_key(public_pem.encode())
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    chunk = key.key_size // 8 - 11
    blocks = b"".join(
        key.encrypt(query[i : i + chunk], padding.PKCS1v15()) for i in range(0, len(query), chunk)
    )
    return {
        "queryMetaInfo": {"source": "switchboard", "queryVersion": "1.0", "securityMode": "RSA"},
        "securityQuery": base64.b64encode(blocks).decode(),
    }
