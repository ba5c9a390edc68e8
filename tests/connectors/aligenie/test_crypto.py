"""securityQuery decryption: the §F.7 vector, round trips, and every way it can fail."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from connectors.aligenie import load_private_key, parse_query, public_key_pem
from connectors.aligenie.crypto import UNDECRYPTABLE, block_size, decrypt_security_query
from connectors.base import InvalidSignature, MalformedPayload
from tests.support.aligenie_client import (
    encode,
    encrypt_query,
    generate_keypair,
    post,
    slot_entity,
    task_query,
)
from tests.support.receiver import CallbackReceiver

SHARED = Path(__file__).resolve().parents[4] / "shared" / "protocols"
# PROTOCOLS.md §F.7 as published (throw-away key), so the test runs without shared/.
VECTOR = {
    "securityQuery": (
        "XxjBDw5v7MOH/hcaW9yJvTzph8nnoSLX0hDW94Rz6hVrSUVmwBFtbM4vHlR8Oaf3uu9w6FG7pgapGae4Vb"
        "SjEmq/tFlzlrlcBTdqgLvAkBWqSOH9zBr7XxmLnmXg5fMo4HqAhIgiVv/WY0pY0980helfdfDbQzhnSld"
        "lKkUTOJQ="
    ),
    "decrypted": (
        '{"sessionId":"s-1","utterance":"打开测试技能","skillId":1001,'
        '"intentName":"welcome","slotEntities":[]}'
    ),
}
TEST_PRIVATE_KEY = """-----BEGIN PRIVATE KEY-----
MIICdwIBADANBgkqhkiG9w0BAQEFAASCAmEwggJdAgEAAoGBANnhsR26+mAkkDB2
pZm448JdhDrb8blraMF975vyocilOJY3bWMI/rcHU/N+6yoKs6jYkK2SXiuHZTud
JNgv2AHakDWYrXp3N/KHdPTeNv96P42xR/JgMuc3l/tObqRq922J243YTgokE4LE
yutSJzETlGwKSxNc7pEWBAl5p2x9AgMBAAECgYBGlW3acstPwCiR+q3VKedm/QKs
Srp5Vgl+vXyVKbotlRDK4TPnpG9X/eC9fj1SxlrDdT0Rbdxh/5/U+yiHfKBeCEIg
6QBSaqBTG8G3LDXo6F6zGifJhlMdHg+5EIW2Vacfdt5fvJWhQ6/54VNyO54ZNqvf
JAUFxsJI4/ouKZst5QJBAPSJjwGn+4w1j/02+7k+VNl0e+wdhaDuc0mYfg3ITZwu
xgHBwKmgTbOow1MW0DTIf3MFXBtyPmTm3dMvhJevG6sCQQDkGEPlGvEO4m9SAaYR
GVqYyqRGUY5sX8VFDrqWeuuoSid6PHj4i+1/p7rDFwu6aD7mTOQdudVq6pvgs91g
tLB3AkEAmr9mSTUFoa/Po/0khRCl30qwlTYFd1cOi/c9Zflo67pJwZjcFDwGj/fv
S2h3b7+lr6Mnq5K7W10h6V/7t4WvqwJAFgDJO+aXbmoldvG1xVx+wtJ5elcPuCCc
9QZwtWdyKC/PExmWSdOlu3TArWUhun+n4at1LfDpR4EOPGTdbCDCDQJBAIpVRd1n
zyX42N/vDqxbQXFLxNXL1TZV5RPo09ACAvDmRdZU7mZpTqmZD+edvMHrYrtEzhkm
qtbveoYDquNFRW8=
-----END PRIVATE KEY-----
"""
MAX = 64 * 1024


@pytest.fixture(scope="module")
def keys_1024() -> tuple[str, str]:
    return generate_keypair(1024)


@pytest.fixture(scope="module")
def keys_2048() -> tuple[str, str]:
    return generate_keypair(2048)


def test_embedded_vector_matches_the_shared_protocol_files():
    if not SHARED.exists():
        pytest.skip("shared/protocols is not beside this checkout")
    assert json.loads((SHARED / "vectors.json").read_text())["D1b_aligenie_securityQuery"] == VECTOR
    assert (SHARED / "testkeys" / "rsa1024_test_private.pem").read_text() == TEST_PRIVATE_KEY
    assert (SHARED / "testkeys" / "aligenie_securityQuery.b64").read_text().strip() == (
        VECTOR["securityQuery"]
    )


def test_the_documented_vector_decrypts_to_the_documented_json():
    key = load_private_key(TEST_PRIVATE_KEY)
    assert block_size(key) == 128
    decrypted = decrypt_security_query(VECTOR["securityQuery"], key)
    assert decrypted == json.loads(VECTOR["decrypted"])


def test_line_broken_base64_is_accepted():
    wrapped = "\r\n".join(
        VECTOR["securityQuery"][i : i + 76] for i in range(0, len(VECTOR["securityQuery"]), 76)
    )
    key = load_private_key(TEST_PRIVATE_KEY)
    assert decrypt_security_query(wrapped, key) == json.loads(VECTOR["decrypted"])


def test_the_documented_vector_parses_as_an_encrypted_query():
    body = encode({"queryMetaInfo": {}, "securityQuery": VECTOR["securityQuery"]})
    q = parse_query(body, private_key_pem=TEST_PRIVATE_KEY, max_bytes=MAX)
    assert (q.session_id, q.utterance, q.skill_id, q.intent_name) == (
        "s-1",
        "打开测试技能",
        1001,
        "welcome",
    )
    assert q.encrypted is True
    assert q.slots == ()
    assert q.user_key == "session:s-1"  # no requestData, no device: the session stands in


@pytest.mark.parametrize("keys", ["keys_1024", "keys_2048"])
def test_round_trip_multi_block_chinese(keys, request):
    private_pem, public_pem = request.getfixturevalue(keys)
    query = task_query(
        # Several hundred bytes of UTF-8: many RSA blocks.
        "美食管家教我做东坡肉，" * 20,
        slots=[slot_entity("foodname", "东坡肉")],
        request_id="20180824222512035-1729115729",
        token="oauth-token",
    )
    body = encrypt_query(query, public_pem)
    ciphertext = base64.b64decode(body["securityQuery"])
    size = 128 if keys == "keys_1024" else 256
    assert len(ciphertext) % size == 0
    assert len(ciphertext) // size >= 3
    q = parse_query(encode(body), private_key_pem=private_pem, max_bytes=MAX)
    assert q.utterance == query["utterance"].strip()
    assert q.slots == (("foodname", "东坡肉"),)
    assert q.request_id == "20180824222512035-1729115729"
    assert q.token == "oauth-token"
    assert "oauth-token" not in repr(q)
    assert q.encrypted is True


def test_a_block_split_inside_a_multibyte_character_still_decodes(keys_1024):
    # 117-byte chunks cut UTF-8 sequences in half; only the joined plaintext is decoded.
    private_pem, public_pem = keys_1024
    for pad in range(3):
        query = task_query("x" * pad + "中" * 100, session_id="s")
        q = parse_query(
            encode(encrypt_query(query, public_pem)), private_key_pem=private_pem, max_bytes=MAX
        )
        assert q.utterance == "x" * pad + "中" * 100


def test_encrypted_body_without_a_configured_key_is_malformed(keys_1024):
    body = encode(encrypt_query(task_query("你好"), keys_1024[1]))
    for pem in (None, ""):
        with pytest.raises(MalformedPayload) as exc:
            parse_query(body, private_key_pem=pem, max_bytes=MAX)
        assert exc.value.status == 400
        assert exc.value.code == "malformed_payload"
        assert "encryption is not configured" in exc.value.message


def test_plaintext_body_when_encryption_is_required_is_refused(keys_1024):
    with pytest.raises(InvalidSignature) as exc:
        parse_query(encode(task_query("你好")), private_key_pem=keys_1024[0], max_bytes=MAX)
    assert exc.value.status == 401
    assert exc.value.code == "invalid_signature"
    assert "requires encrypted requests" in exc.value.message


def test_wrong_key_is_refused(keys_1024):
    other_private, _ = generate_keypair(1024)
    body = encode(encrypt_query(task_query("你好"), keys_1024[1]))
    with pytest.raises(InvalidSignature) as exc:
        parse_query(body, private_key_pem=other_private, max_bytes=MAX)
    assert exc.value.status == 401
    assert exc.value.code == "invalid_signature"
    assert exc.value.message == UNDECRYPTABLE


@pytest.mark.parametrize(
    "security_query",
    [
        "not base64 at all!",
        base64.b64encode(b"\x01" * 100).decode(),  # not whole 128-byte blocks
        base64.b64encode(b"\x00" * 128).decode(),  # a block, but no valid padding
        base64.b64encode(bytes(range(128)) * 2).decode(),
    ],
)
def test_garbled_ciphertext_gets_one_uniform_answer(security_query, keys_1024):
    body = encode({"queryMetaInfo": {}, "securityQuery": security_query})
    with pytest.raises(InvalidSignature) as exc:
        parse_query(body, private_key_pem=keys_1024[0], max_bytes=MAX)
    assert (exc.value.status, exc.value.code, exc.value.message) == (
        401,
        "invalid_signature",
        UNDECRYPTABLE,
    )


def test_decrypted_plaintext_that_is_not_a_json_object_is_refused_the_same_way(keys_1024):
    private_pem, public_pem = keys_1024
    for plaintext in (b"\xff\xfe not utf-8", b"not json", b"[1, 2]"):
        body = encode(encrypt_query(plaintext, public_pem))
        with pytest.raises(InvalidSignature) as exc:
            parse_query(body, private_key_pem=private_pem, max_bytes=MAX)
        assert exc.value.message == UNDECRYPTABLE


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"securityQuery": 5}, "securityQuery"),
        ({"securityQuery": ""}, "securityQuery"),
        ({"securityQuery": "abcd", "queryMetaInfo": "x"}, "queryMetaInfo"),
    ],
)
def test_encrypted_envelope_shape_is_checked(body, field, keys_1024):
    with pytest.raises(MalformedPayload) as exc:
        parse_query(encode(body), private_key_pem=keys_1024[0], max_bytes=MAX)
    assert exc.value.status == 400
    assert exc.value.details[0]["field"] == field


def test_decrypted_query_with_bad_fields_is_malformed_not_unauthenticated(keys_1024):
    private_pem, public_pem = keys_1024
    body = encode(encrypt_query({"utterance": "你好"}, public_pem))
    with pytest.raises(MalformedPayload) as exc:
        parse_query(body, private_key_pem=private_pem, max_bytes=MAX)
    assert exc.value.details == [
        {"field": "sessionId", "message": "is required (a non-empty string)"}
    ]


def test_a_bad_configured_key_is_a_configuration_error(keys_1024):
    body = encode(encrypt_query(task_query("你好"), keys_1024[1]))
    with pytest.raises(ValueError, match="private key"):
        parse_query(body, private_key_pem="-----BEGIN PRIVATE KEY-----\nxx\n", max_bytes=MAX)


def test_public_key_pem_matches_the_pair(keys_2048):
    private_pem, public_pem = keys_2048
    assert public_key_pem(private_pem) == public_pem


def test_the_client_posts_what_the_connector_parses(keys_1024):
    private_pem, public_pem = keys_1024
    body = encrypt_query(task_query("你好", session_id="s-post"), public_pem)
    with CallbackReceiver() as receiver:
        assert post(receiver.url, body, timeout=5).status_code == 204
    (received,) = receiver.accepted()
    assert received.headers["content-type"].startswith("application/json")
    q = parse_query(received.body, private_key_pem=private_pem, max_bytes=MAX)
    assert (q.session_id, q.utterance) == ("s-post", "你好")
