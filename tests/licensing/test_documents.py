"""Licence documents alone: signing, verifying and every way a document is refused."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest

from switchboard.licensing.documents import (
    FORMAT,
    ExpiredLicence,
    InvalidTrustedKey,
    LicenceError,
    LicenceTerms,
    MalformedLicence,
    NotYetValidLicence,
    TamperedLicence,
    UnknownSigningKey,
    key_id,
    public_key_b64,
    sign_licence,
    verify_licence,
    verify_signature_only,
)
from tests.licensing.conftest import b64url, envelope, make_terms, sign_raw, unb64url, utcnow


@pytest.fixture
def keys(signing_pem: bytes) -> list[str]:
    return [public_key_b64(signing_pem)]


def test_round_trip_returns_the_signed_terms(signing_pem, keys):
    terms = make_terms(connector_kinds=("dingtalk", "webhook", "dingtalk"), mau_limit=None)
    text = sign_licence(terms, signing_pem)

    document = envelope(text)
    assert document["format"] == FORMAT
    assert document["key_id"] == key_id(keys[0])
    assert verify_licence(text, keys, utcnow()) == terms
    assert terms.connector_kinds == ("dingtalk", "webhook")
    assert terms.mau_limit is None


def test_payload_is_canonical_json_with_utc_timestamps(signing_pem):
    terms = make_terms()
    payload = unb64url(envelope(sign_licence(terms, signing_pem))["payload"])

    data = json.loads(payload)
    assert payload == json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    assert data["valid_until"].endswith("Z")
    assert data["licence_id"] == str(terms.licence_id)


def test_key_id_is_a_sha256_prefix_of_the_raw_key(keys):
    assert len(key_id(keys[0])) == 16
    assert int(key_id(keys[0]), 16) >= 0


def test_a_second_trusted_key_is_accepted(signing_pem, other_pem, keys):
    text = sign_licence(make_terms(), other_pem)

    assert verify_licence(text, [*keys, public_key_b64(other_pem)], utcnow()).tenant == "acme"


def test_changed_payload_is_tampered(signing_pem, keys):
    text = sign_licence(make_terms(mau_limit=1000), signing_pem)
    document = envelope(text)
    payload = unb64url(document["payload"]).replace(b'"mau_limit":1000', b'"mau_limit":9000')
    document["payload"] = b64url(payload)

    with pytest.raises(TamperedLicence, match="signature does not match"):
        verify_licence(json.dumps(document), keys, utcnow())


def test_signature_of_another_licence_is_tampered(signing_pem, keys):
    first = envelope(sign_licence(make_terms(), signing_pem))
    second = envelope(sign_licence(make_terms(), signing_pem))
    first["signature"] = second["signature"]

    with pytest.raises(TamperedLicence, match="altered or signed by another key"):
        verify_licence(json.dumps(first), keys, utcnow())


def test_untrusted_key_is_refused_by_name(other_pem, keys):
    text = sign_licence(make_terms(), other_pem)
    untrusted = key_id(public_key_b64(other_pem))

    with pytest.raises(UnknownSigningKey, match=f"{untrusted}.*not trusted by this installation"):
        verify_licence(text, keys, utcnow())


def test_no_trusted_keys_says_so(signing_pem):
    with pytest.raises(UnknownSigningKey, match="no licence keys are configured"):
        verify_licence(sign_licence(make_terms(), signing_pem), [], utcnow())


def test_trusted_key_id_with_another_keys_signature_is_tampered(signing_pem, other_pem, keys):
    document = envelope(sign_licence(make_terms(), other_pem))
    document["key_id"] = key_id(keys[0])

    with pytest.raises(TamperedLicence, match="signature does not match"):
        verify_licence(json.dumps(document), keys, utcnow())


def test_expired(signing_pem, keys):
    until = utcnow() - timedelta(days=1)
    text = sign_licence(
        make_terms(valid_from=until - timedelta(days=30), valid_until=until), signing_pem
    )

    with pytest.raises(ExpiredLicence, match=f"expired on {until:%Y-%m-%dT%H:%M:%S}Z"):
        verify_licence(text, keys, utcnow())
    # The ledger can still check an old document's signature.
    assert verify_signature_only(text, keys).valid_until == until


def test_not_yet_valid(signing_pem, keys):
    start = utcnow() + timedelta(days=2)
    text = sign_licence(
        make_terms(valid_from=start, valid_until=start + timedelta(days=30)), signing_pem
    )

    with pytest.raises(NotYetValidLicence, match=f"not valid until {start:%Y-%m-%dT%H:%M:%S}Z"):
        verify_licence(text, keys, utcnow())
    assert verify_licence(text, keys, start).valid_from == start


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda text, doc: "this is not json", "not JSON"),
        (lambda text, doc: "[1, 2]", "not a JSON object"),
        (lambda text, doc: json.dumps({**doc, "format": "other/2"}), "format is 'other/2'"),
        (
            lambda text, doc: json.dumps({k: v for k, v in doc.items() if k != "signature"}),
            "missing field.*signature",
        ),
        (lambda text, doc: json.dumps({**doc, "payload": "a*b"}), "payload is not base64url"),
        (lambda text, doc: json.dumps({**doc, "payload": "abcde"}), "payload is not valid base64"),
        (
            lambda text, doc: json.dumps({**doc, "signature": doc["signature"][:20]}),
            "signature is 15 bytes",
        ),
        (lambda text, doc: json.dumps({**doc, "key_id": 7}), "key_id is not a key fingerprint"),
        (lambda text, doc: json.dumps({**doc, "extra": 1}), "unknown field.*extra"),
    ],
)
def test_malformed_envelope_names_the_problem(signing_pem, keys, mangle, message):
    text = sign_licence(make_terms(), signing_pem)

    with pytest.raises(MalformedLicence, match=message):
        verify_licence(mangle(text, envelope(text)), keys, utcnow())


def _payload(**changes: object) -> dict[str, object]:
    data = make_terms().to_json()
    data.update(changes)
    return {k: v for k, v in data.items() if v is not ...}


@pytest.mark.parametrize(
    "payload, message",
    [
        (_payload(mau_limit=...), "missing field.*mau_limit"),
        (_payload(licence_id="nope"), "licence_id is not a UUID"),
        (_payload(valid_until="2030-01-01T00:00:00"), "valid_until is not an ISO-8601 UTC"),
        (_payload(valid_until="soon Z"), "valid_until is not an ISO-8601 UTC"),
        (_payload(mau_limit=-1), "mau_limit must be a whole number"),
        (_payload(max_bots=True), "max_bots must be a whole number"),
        (_payload(connector_kinds=["fax"]), "unknown kind.*fax"),
        (_payload(enforcement="lenient"), "enforcement must be one of"),
        (_payload(tenant="Not a slug"), "tenant must be a tenant slug"),
        (_payload(bonus=1), "unknown field.*bonus"),
        (
            _payload(valid_from="2030-01-02T00:00:00Z", valid_until="2030-01-01T00:00:00Z"),
            "valid_from .* must be before valid_until",
        ),
    ],
)
def test_malformed_payload_names_the_field(signing_pem, keys, payload, message):
    # Correctly signed, so only the terms themselves are wrong.
    text = sign_raw(json.dumps(payload).encode(), signing_pem)

    with pytest.raises(MalformedLicence, match=message):
        verify_signature_only(text, keys)


def test_signed_payload_that_is_not_json(signing_pem, keys):
    with pytest.raises(MalformedLicence, match="payload is not JSON"):
        verify_signature_only(sign_raw(b"\xff not json", signing_pem), keys)


def test_errors_are_value_errors():
    assert issubclass(LicenceError, ValueError)
    for error in (MalformedLicence, UnknownSigningKey, TamperedLicence, ExpiredLicence):
        assert issubclass(error, LicenceError)


def test_terms_validate_on_construction():
    with pytest.raises(MalformedLicence, match="valid_from"):
        make_terms(valid_from=utcnow(), valid_until=utcnow() - timedelta(seconds=1))
    with pytest.raises(MalformedLicence, match="time zone"):
        make_terms(issued_at=utcnow().replace(tzinfo=None))
    with pytest.raises(MalformedLicence, match="licence_id"):
        LicenceTerms(**{**make_terms().__dict__, "licence_id": str(uuid.uuid4())})


def test_malformed_trusted_key_is_a_configuration_error(signing_pem):
    with pytest.raises(InvalidTrustedKey, match=r"misconfigured.*not a public licence key"):
        verify_licence(sign_licence(make_terms(), signing_pem), ["bm9wZQ=="], utcnow())
