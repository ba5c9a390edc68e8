"""Signed licence documents: what they say, how they are signed and how they are checked.

Pure Python and `cryptography`, no Django, so the issuing side can run anywhere.

A document is a small JSON text:

    {"format": "switchboard-licence/1", "key_id": "…", "payload": "…", "signature": "…"}

`payload` is base64url of the canonical JSON of the terms, and `signature` is base64url
of the Ed25519 signature over exactly those payload bytes. Signing bytes rather than
re-serialised JSON means the verifier never has to reproduce a canonical form, so no
two JSON encoders can ever disagree about what was signed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT = "switchboard-licence/1"
CONNECTOR_KINDS = frozenset({"webhook", "dingtalk", "aligenie"})
ENFORCEMENTS = frozenset({"hard", "soft"})

_SLUG = re.compile(r"^[-a-zA-Z0-9_]{1,64}$")
_B64URL = re.compile(r"^[A-Za-z0-9_-]*={0,2}$")
_SIGNATURE_BYTES = 64
_PUBLIC_KEY_BYTES = 32
# Envelope fields; anything else means a format this code does not understand.
_ENVELOPE = ("format", "key_id", "payload", "signature")
_LIMIT_FIELDS = (
    "mau_limit",
    "monthly_tokens",
    "tenant_messages_per_minute",
    "user_messages_per_minute",
    "max_bots",
)
_DATE_FIELDS = ("issued_at", "valid_from", "valid_until")


class LicenceError(ValueError):
    """A licence was refused; the message says why, in words an operator can act on."""


class MalformedLicence(LicenceError):
    pass


class UnknownSigningKey(LicenceError):
    pass


class TamperedLicence(LicenceError):
    pass


class ExpiredLicence(LicenceError):
    pass


class NotYetValidLicence(LicenceError):
    pass


class InvalidTrustedKey(LicenceError):
    """The installation's own list of trusted keys is wrong (configuration, not document)."""


# --- keys ---------------------------------------------------------------------------


def generate_private_key_pem() -> bytes:
    """A new Ed25519 signing key as unencrypted PKCS8 PEM (the caller protects the file)."""
    return Ed25519PrivateKey.generate().private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def load_private_key(private_pem: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the private key is not an Ed25519 key")
    return key


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw
    )


def public_key_b64(private_pem: bytes) -> str:
    """The public half of `private_pem`: standard base64 of the 32 raw bytes."""
    raw = _raw_public(load_private_key(private_pem).public_key())
    return base64.b64encode(raw).decode("ascii")


def _decode_public_key(public_key_b64: str) -> bytes:
    try:
        raw = base64.b64decode(public_key_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != _PUBLIC_KEY_BYTES:
        raise ValueError(
            f"{public_key_b64!r} is not a public licence key "
            "(base64 of the 32 raw bytes of an Ed25519 public key)"
        )
    return raw


def key_id(public_key_b64: str) -> str:
    """A short fingerprint of a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(_decode_public_key(public_key_b64)).hexdigest()[:16]


# --- terms --------------------------------------------------------------------------


def _format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class LicenceTerms:
    """What a licence grants. None means "no limit"; empty connector_kinds means "all".

    Timestamps are kept to the second, in UTC, so that the terms read back from a
    document equal the terms that were signed.
    """

    licence_id: uuid.UUID
    tenant: str
    issued_at: datetime
    valid_from: datetime
    valid_until: datetime
    mau_limit: int | None = None
    monthly_tokens: int | None = None
    tenant_messages_per_minute: int | None = None
    user_messages_per_minute: int | None = None
    connector_kinds: tuple[str, ...] = field(default=())
    max_bots: int | None = None
    enforcement: str = "hard"

    def __post_init__(self) -> None:
        if not isinstance(self.licence_id, uuid.UUID):
            raise MalformedLicence("licence_id must be a UUID")
        if not isinstance(self.tenant, str) or not _SLUG.match(self.tenant):
            raise MalformedLicence(
                f"tenant must be a tenant slug (letters, digits, - and _), got {self.tenant!r}"
            )
        for name in _DATE_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, datetime) or value.utcoffset() is None:
                raise MalformedLicence(f"{name} must be a date and time with a time zone")
            object.__setattr__(self, name, value.astimezone(UTC).replace(microsecond=0))
        if self.valid_from >= self.valid_until:
            raise MalformedLicence(
                f"valid_from ({_format_time(self.valid_from)}) must be before valid_until "
                f"({_format_time(self.valid_until)})"
            )
        for name in _LIMIT_FIELDS:
            value = getattr(self, name)
            # bool is an int in Python; `true` as a limit is a mistake, not 1.
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 0
            ):
                raise MalformedLicence(
                    f"{name} must be a whole number >= 0 or empty, got {value!r}"
                )
        kinds = self.connector_kinds
        if isinstance(kinds, str) or not all(isinstance(kind, str) for kind in kinds):
            raise MalformedLicence("connector_kinds must be a list of connector kinds")
        unknown = sorted(set(kinds) - CONNECTOR_KINDS)
        if unknown:
            raise MalformedLicence(
                f"connector_kinds has unknown kind(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(CONNECTOR_KINDS))}"
            )
        object.__setattr__(self, "connector_kinds", tuple(sorted(set(kinds))))
        if self.enforcement not in ENFORCEMENTS:
            raise MalformedLicence(
                f"enforcement must be one of {', '.join(sorted(ENFORCEMENTS))}, "
                f"got {self.enforcement!r}"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "licence_id": str(self.licence_id),
            "tenant": self.tenant,
            **{name: _format_time(getattr(self, name)) for name in _DATE_FIELDS},
            **{name: getattr(self, name) for name in _LIMIT_FIELDS},
            "connector_kinds": list(self.connector_kinds),
            "enforcement": self.enforcement,
        }

    def canonical_bytes(self) -> bytes:
        return json.dumps(
            self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        ).encode("ascii")

    @classmethod
    def from_json(cls, data: Any) -> LicenceTerms:
        """Terms from a decoded payload; MalformedLicence names the first bad field."""
        if not isinstance(data, Mapping):
            raise MalformedLicence("payload is not a JSON object")
        expected = {"licence_id", "tenant", "connector_kinds", "enforcement"}
        expected |= set(_DATE_FIELDS) | set(_LIMIT_FIELDS)
        missing = sorted(expected - data.keys())
        if missing:
            raise MalformedLicence(f"payload is missing field(s): {', '.join(missing)}")
        # A field this version does not know could be a limit it would silently not
        # enforce; a new kind of term needs a new format tag.
        unknown = sorted(set(data.keys()) - expected)
        if unknown:
            raise MalformedLicence(f"payload has unknown field(s): {', '.join(unknown)}")
        try:
            licence_id = uuid.UUID(data["licence_id"])
        except (ValueError, TypeError, AttributeError):
            raise MalformedLicence("payload field licence_id is not a UUID") from None
        dates = {name: _parse_time(name, data[name]) for name in _DATE_FIELDS}
        kinds = data["connector_kinds"]
        if not isinstance(kinds, list):
            raise MalformedLicence("payload field connector_kinds is not a list")
        return cls(
            licence_id=licence_id,
            tenant=data["tenant"],
            connector_kinds=tuple(kinds),
            enforcement=data["enforcement"],
            **dates,
            **{name: data[name] for name in _LIMIT_FIELDS},
        )


def _parse_time(name: str, value: Any) -> datetime:
    if not isinstance(value, str) or not value.endswith("Z"):
        raise MalformedLicence(f"payload field {name} is not an ISO-8601 UTC time (…Z)")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise MalformedLicence(f"payload field {name} is not an ISO-8601 UTC time") from None
    return parsed


# --- documents ----------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(name: str, text: Any) -> bytes:
    # urlsafe_b64decode silently skips characters outside the alphabet; a document with
    # stray characters is malformed, not "close enough".
    if not isinstance(text, str) or not _B64URL.match(text):
        raise MalformedLicence(f"{name} is not base64url text")
    try:
        text = text.rstrip("=")
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise MalformedLicence(f"{name} is not valid base64url (wrong length)") from None


def sign_licence(terms: LicenceTerms, private_pem: bytes) -> str:
    """The licence document (JSON text, one line plus newline) for `terms`."""
    key = load_private_key(private_pem)
    payload = terms.canonical_bytes()
    raw_public = _raw_public(key.public_key())
    document = {
        "format": FORMAT,
        "key_id": key_id(base64.b64encode(raw_public).decode("ascii")),
        "payload": _b64url(payload),
        "signature": _b64url(key.sign(payload)),
    }
    return json.dumps(document, indent=None, separators=(", ", ": ")) + "\n"


def document_key_id(text: str) -> str:
    """The key id a document claims, after the envelope checks (not the signature)."""
    return _envelope(text)[0]


def _envelope(text: str) -> tuple[str, bytes, bytes]:
    try:
        document = json.loads(text)
    except (ValueError, TypeError) as exc:
        raise MalformedLicence(f"not a licence document: not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise MalformedLicence("not a licence document: not a JSON object")
    if document.get("format") != FORMAT:
        raise MalformedLicence(
            f"not a licence document: format is {document.get('format')!r}, expected {FORMAT!r}"
        )
    missing = [name for name in _ENVELOPE if name not in document]
    if missing:
        raise MalformedLicence(f"licence document is missing field(s): {', '.join(missing)}")
    unknown = sorted(set(document) - set(_ENVELOPE))
    if unknown:
        raise MalformedLicence(f"licence document has unknown field(s): {', '.join(unknown)}")
    kid = document["key_id"]
    if not isinstance(kid, str) or not re.fullmatch(r"[0-9a-f]{16}", kid):
        raise MalformedLicence("key_id is not a key fingerprint (16 lower-case hex digits)")
    payload = _unb64url("payload", document["payload"])
    signature = _unb64url("signature", document["signature"])
    if len(signature) != _SIGNATURE_BYTES:
        raise MalformedLicence(
            f"signature is {len(signature)} bytes, an Ed25519 signature is {_SIGNATURE_BYTES}"
        )
    return kid, payload, signature


def _trusted(trusted_keys: Sequence[str]) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for entry in trusted_keys:
        if not entry.strip():
            continue
        try:
            raw = _decode_public_key(entry)
        except ValueError as exc:
            raise InvalidTrustedKey(f"a trusted licence key is misconfigured: {exc}") from None
        keys[hashlib.sha256(raw).hexdigest()[:16]] = raw
    return keys


def verify_signature_only(text: str, trusted_keys: Sequence[str]) -> LicenceTerms:
    """The terms of a genuine document, whatever its dates (to re-check the ledger).

    Raises MalformedLicence, UnknownSigningKey or TamperedLicence, and InvalidTrustedKey
    when an entry of `trusted_keys` is not a public key.
    """
    kid, payload, signature = _envelope(text)
    keys = _trusted(trusted_keys)
    raw = keys.get(kid)
    if raw is None:
        hint = "" if keys else " (no licence keys are configured)"
        raise UnknownSigningKey(
            f"the licence was signed with key {kid}, which is not trusted by this "
            f"installation{hint}"
        )
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(signature, payload)
    except InvalidSignature:
        raise TamperedLicence(
            "signature does not match: the licence was altered or signed by another key"
        ) from None
    try:
        data = json.loads(payload.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise MalformedLicence("payload is not JSON") from None
    return LicenceTerms.from_json(data)


def verify_licence(text: str, trusted_keys: Sequence[str], now: datetime) -> LicenceTerms:
    """The terms of a genuine document that is in force at `now` (an aware datetime)."""
    terms = verify_signature_only(text, trusted_keys)
    if now >= terms.valid_until:
        raise ExpiredLicence(
            f"licence {terms.licence_id} expired on {_format_time(terms.valid_until)}"
        )
    if now < terms.valid_from:
        raise NotYetValidLicence(
            f"licence {terms.licence_id} is not valid until {_format_time(terms.valid_from)}"
        )
    return terms
