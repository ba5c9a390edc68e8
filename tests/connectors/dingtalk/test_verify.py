"""Callback signatures against PROTOCOLS.md §F.1 and its negative cases."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest

from connectors.base import InvalidSignature
from connectors.dingtalk import MAX_SKEW_MS, compute_sign, verify_request

VECTORS_FILE = Path(__file__).resolve().parents[4] / "shared" / "protocols" / "vectors.json"
# §F.1 as published, so the tests also run where shared/ is absent.
F1 = {
    "appSecret": "dtAppSecret_TEST_0123456789abcdefghijklmnopqrstuvwxyz",
    "timestamp": "1700000000000",
    "string_to_sign": "1700000000000\ndtAppSecret_TEST_0123456789abcdefghijklmnopqrstuvwxyz",
    "sign": "VvTwenA1VmtRGpFHLb4IUZBV9gfYEBeJQC/gC+kXvAc=",
}
SECRET, TS, SIGN = F1["appSecret"], F1["timestamp"], F1["sign"]
NOW = int(TS)


def test_embedded_vector_matches_the_shared_protocol_file():
    if not VECTORS_FILE.exists():
        pytest.skip("shared/protocols is not beside this checkout")
    assert json.loads(VECTORS_FILE.read_text())["A1_dingtalk_callback"] == F1


def test_compute_sign_reproduces_f1():
    assert compute_sign(TS, SECRET) == SIGN


def test_f1_vector_verifies():
    verify_request(timestamp=TS, sign=SIGN, app_secret=SECRET, now_ms=NOW)


@pytest.mark.parametrize("offset", [MAX_SKEW_MS, -MAX_SKEW_MS, 1, -1, 0])
def test_skew_up_to_one_hour_either_way_is_accepted(offset):
    verify_request(timestamp=TS, sign=SIGN, app_secret=SECRET, now_ms=NOW + offset)


def test_stale_timestamp_is_too_old():
    with pytest.raises(InvalidSignature, match="too old") as err:
        verify_request(timestamp=TS, sign=SIGN, app_secret=SECRET, now_ms=NOW + MAX_SKEW_MS + 1)
    assert err.value.status == 401 and err.value.code == "invalid_signature"
    assert err.value.details[0]["field"] == "timestamp"


def test_future_timestamp_is_rejected():
    with pytest.raises(InvalidSignature, match="in the future"):
        verify_request(timestamp=TS, sign=SIGN, app_secret=SECRET, now_ms=NOW - MAX_SKEW_MS - 1)


def test_forged_sign_and_wrong_secret_are_rejected():
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_request(timestamp=TS, sign=SIGN, app_secret=SECRET + "x", now_ms=NOW)
    forged = "A" + SIGN[1:]
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_request(timestamp=TS, sign=forged, app_secret=SECRET, now_ms=NOW)


def test_sign_for_another_timestamp_is_rejected():
    other = str(NOW + 1)
    with pytest.raises(InvalidSignature):
        verify_request(timestamp=other, sign=SIGN, app_secret=SECRET, now_ms=NOW)


def test_url_encoded_sign_is_rejected_with_a_hint():
    encoded = quote(SIGN, safe="")
    assert "%2F" in encoded and "%2B" in encoded
    with pytest.raises(InvalidSignature, match="URL-encoded"):
        verify_request(timestamp=TS, sign=encoded, app_secret=SECRET, now_ms=NOW)


@pytest.mark.parametrize(
    "timestamp, sign, missing",
    [(None, SIGN, "timestamp"), (TS, None, "sign"), ("", "", "timestamp, sign")],
)
def test_missing_headers_are_named(timestamp, sign, missing):
    with pytest.raises(InvalidSignature, match=f"missing .*: {missing}$"):
        verify_request(timestamp=timestamp, sign=sign, app_secret=SECRET, now_ms=NOW)


@pytest.mark.parametrize("timestamp", ["17e11", "-1700000000000", "1700000000000.0", "١٢٣", " 1"])
def test_non_numeric_timestamp_is_rejected(timestamp):
    with pytest.raises(InvalidSignature, match="not a decimal number"):
        verify_request(timestamp=timestamp, sign=SIGN, app_secret=SECRET, now_ms=NOW)


def test_non_ascii_sign_is_a_mismatch_not_a_crash():
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_request(timestamp=TS, sign="签名", app_secret=SECRET, now_ms=NOW)
