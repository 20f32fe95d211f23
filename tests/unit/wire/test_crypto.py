"""MPTCP crypto values, checked against RFC 4231 vectors and an independent implementation
(the `openssl` command line), with the message layouts assembled by hand in the test."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from testbed.wire import (
    WireError,
    add_addr_hmac,
    hmac_sha256,
    join_ack_hmac,
    join_synack_hmac,
    key_to_idsn,
    key_to_token,
)

# RFC 4231 section 4: (key, data, HMAC-SHA-256)
RFC4231_VECTORS = [
    (
        "0b" * 20,
        b"Hi There".hex(),
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
    ),
    (
        b"Jefe".hex(),
        b"what do ya want for nothing?".hex(),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    ),
    ("aa" * 20, "dd" * 50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (
        "0102030405060708090a0b0c0d0e0f10111213141516171819",
        "cd" * 50,
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
    ),
    (
        "aa" * 131,
        b"Test Using Larger Than Block-Size Key - Hash Key First".hex(),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    ),
]

requires_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl")

# Keys and nonces used throughout; K_A/R_A belong to the initiator (client), K_B/R_B to the
# responder (server).
KEY_A = 0x0123456789ABCDEF
KEY_B = 0xFEDCBA9876543210
NONCE_A = 0x11223344
NONCE_B = 0xAABBCCDD


def openssl_sha256(data: bytes) -> bytes:
    out = subprocess.run(
        ["openssl", "dgst", "-sha256", "-binary"], input=data, capture_output=True, check=True
    )
    return out.stdout


def openssl_hmac(key: bytes, data: bytes) -> bytes:
    out = subprocess.run(
        ["openssl", "dgst", "-sha256", "-binary", "-mac", "HMAC", "-macopt", f"hexkey:{key.hex()}"],
        input=data, capture_output=True, check=True,
    )
    return out.stdout


@pytest.mark.parametrize(("key", "data", "expected"), RFC4231_VECTORS)
def test_hmac_sha256_rfc4231(key: str, data: str, expected: str) -> None:
    assert hmac_sha256(bytes.fromhex(key), bytes.fromhex(data)).hex() == expected


def test_token_and_idsn_known_values() -> None:
    # Key 1 -> token and IDSN as computed by Wireshark's MPTCP dissector
    # (mptcp.expected_token / mptcp.expected_idsn on an MP_CAPABLE carrying key 1).
    assert key_to_token(1) == 3441844757
    assert key_to_idsn(1) == 1867956527068875344


@requires_openssl
@pytest.mark.parametrize("key", [0, 1, KEY_A, KEY_B, 2**64 - 1])
def test_token_and_idsn_against_openssl(key: int) -> None:
    digest = openssl_sha256(key.to_bytes(8, "big"))
    assert key_to_token(key) == int.from_bytes(digest[:4], "big")
    assert key_to_idsn(key) == int.from_bytes(digest[-8:], "big")


@requires_openssl
def test_join_synack_hmac_against_openssl() -> None:
    # Responder B sends HMAC(K_B || K_A, R_B || R_A), leftmost 64 bits.
    key = bytes.fromhex("fedcba9876543210" "0123456789abcdef")
    message = bytes.fromhex("aabbccdd" "11223344")
    expected = int.from_bytes(openssl_hmac(key, message)[:8], "big")
    assert join_synack_hmac(KEY_B, KEY_A, NONCE_B, NONCE_A) == expected


@requires_openssl
def test_join_ack_hmac_against_openssl() -> None:
    # Initiator A sends HMAC(K_A || K_B, R_A || R_B), leftmost 160 bits.
    key = bytes.fromhex("0123456789abcdef" "fedcba9876543210")
    message = bytes.fromhex("11223344" "aabbccdd")
    assert join_ack_hmac(KEY_A, KEY_B, NONCE_A, NONCE_B) == openssl_hmac(key, message)[:20]


def test_join_hmacs_are_role_sensitive() -> None:
    """Swapping the roles must change the value (catches an argument-order slip)."""
    synack = join_synack_hmac(KEY_B, KEY_A, NONCE_B, NONCE_A)
    assert synack != join_synack_hmac(KEY_A, KEY_B, NONCE_A, NONCE_B)
    assert join_ack_hmac(KEY_A, KEY_B, NONCE_A, NONCE_B)[:8] != synack.to_bytes(8, "big")
    # The initiator's third ACK value is the same function with the roles mirrored.
    mirrored = join_synack_hmac(KEY_A, KEY_B, NONCE_A, NONCE_B).to_bytes(8, "big")
    assert join_ack_hmac(KEY_A, KEY_B, NONCE_A, NONCE_B)[:8] == mirrored


@requires_openssl
@pytest.mark.parametrize(
    ("address_id", "address", "port", "message_hex"),
    [
        (1, "10.0.0.2", None, "01" "0a000002" "0000"),
        (7, "192.168.1.20", 8080, "07" "c0a80114" "1f90"),
        (255, "2001:db8::1", None, "ff" "20010db8000000000000000000000001" "0000"),
        (2, "2001:db8::2", 443, "02" "20010db8000000000000000000000002" "01bb"),
    ],
)
def test_add_addr_hmac_against_openssl(
    address_id: int, address: str, port: int | None, message_hex: str
) -> None:
    # Sender uses HMAC(K_sender || K_receiver, id || address || port), rightmost 64 bits.
    key = KEY_A.to_bytes(8, "big") + KEY_B.to_bytes(8, "big")
    expected = int.from_bytes(openssl_hmac(key, bytes.fromhex(message_hex))[-8:], "big")
    assert add_addr_hmac(KEY_A, KEY_B, address_id, address, port) == expected
    # The receiver verifies with the keys in the same (sender-first) order; its own order differs.
    assert add_addr_hmac(KEY_B, KEY_A, address_id, address, port) != expected


def test_crypto_rejects_bad_inputs_with_fields() -> None:
    with pytest.raises(WireError) as error:
        key_to_token(2**64)
    assert error.value.field == "mptcp.key"
    with pytest.raises(WireError) as error:
        join_synack_hmac(KEY_B, KEY_A, 2**32, 0)
    assert error.value.field == "mptcp.mp_join.nonce"
    with pytest.raises(WireError) as error:
        add_addr_hmac(KEY_A, KEY_B, 1, "not-an-address", None)
    assert error.value.field == "mptcp.add_addr.address"
    with pytest.raises(WireError) as error:
        add_addr_hmac(KEY_A, KEY_B, 256, "10.0.0.1", None)
    assert error.value.field == "mptcp.add_addr.address_id"
    with pytest.raises(WireError) as error:
        add_addr_hmac(KEY_A, KEY_B, 1, "10.0.0.1", 70000)
    assert error.value.field == "mptcp.add_addr.port"
