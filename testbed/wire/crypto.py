"""MPTCP v1 values derived from keys and nonces that appear on the wire (RFC 8684 3.1, 3.2, 3.4.1).

Every function names its arguments by role ("responder"/"initiator" for MP_JOIN, "sender"/
"receiver" for ADD_ADDR), and the key placed first in the HMAC key is always the one of the
host that computes the value it SENDS, as in Linux (net/mptcp/subflow.c, options.c):

- the MP_JOIN responder (B, the passive side) sends HMAC(K_B||K_A, R_B||R_A), leftmost 64 bits;
- the MP_JOIN initiator (A) sends HMAC(K_A||K_B, R_A||R_B), leftmost 160 bits;
- an ADD_ADDR sender sends HMAC(K_sender||K_receiver, id||address||port), rightmost 64 bits.

To verify a received value, call the same function with the peer's role filled by the peer.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import ipaddress
import struct

from testbed.wire.errors import WireError

_KEY_PAIR = struct.Struct("!QQ")
_NONCE_PAIR = struct.Struct("!II")
_U64 = struct.Struct("!Q")


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """Standard HMAC-SHA256 (RFC 2104 / 4231): the one primitive everything below uses."""
    return _hmac.digest(key, message, "sha256")


def _key_bytes(key: int, field: str) -> bytes:
    try:
        return _U64.pack(key)
    except struct.error:
        raise WireError(field, f"a key is an unsigned 64-bit integer, got {key!r}") from None


def _key_pair(first: int, second: int, field: str) -> bytes:
    return _key_bytes(first, field) + _key_bytes(second, field)


def _nonce_pair(first: int, second: int, field: str) -> bytes:
    try:
        return _NONCE_PAIR.pack(first, second)
    except struct.error:
        raise WireError(field, f"nonces are unsigned 32-bit integers: {first!r}, {second!r}") from None


def key_to_token(key: int) -> int:
    """The 32-bit token: the most significant 32 bits of SHA-256 of the key (8 bytes, big endian)."""
    digest = hashlib.sha256(_key_bytes(key, "mptcp.key")).digest()
    return int.from_bytes(digest[:4], "big")


def key_to_idsn(key: int) -> int:
    """The initial data sequence number: the least significant 64 bits of SHA-256(key).

    The first data byte a host sends has DSN = key_to_idsn(own key) + 1.
    """
    digest = hashlib.sha256(_key_bytes(key, "mptcp.key")).digest()
    return int.from_bytes(digest[24:], "big")


def join_synack_hmac(
    key_responder: int, key_initiator: int, nonce_responder: int, nonce_initiator: int
) -> int:
    """MP_JOIN SYN/ACK truncated HMAC (sent by the responder B): leftmost 64 bits of
    HMAC(key=K_B||K_A, msg=R_B||R_A)."""
    digest = hmac_sha256(
        _key_pair(key_responder, key_initiator, "mptcp.mp_join.key"),
        _nonce_pair(nonce_responder, nonce_initiator, "mptcp.mp_join.nonce"),
    )
    return int.from_bytes(digest[:8], "big")


def join_ack_hmac(
    key_initiator: int, key_responder: int, nonce_initiator: int, nonce_responder: int
) -> bytes:
    """MP_JOIN third-ACK HMAC (sent by the initiator A): leftmost 160 bits (20 bytes) of
    HMAC(key=K_A||K_B, msg=R_A||R_B)."""
    digest = hmac_sha256(
        _key_pair(key_initiator, key_responder, "mptcp.mp_join.key"),
        _nonce_pair(nonce_initiator, nonce_responder, "mptcp.mp_join.nonce"),
    )
    return digest[:20]


def add_addr_hmac(
    key_sender: int, key_receiver: int, address_id: int, address: str, port: int | None
) -> int:
    """ADD_ADDR truncated HMAC: rightmost 64 bits of HMAC(key=K_sender||K_receiver,
    msg=address id (1 byte) || address (4 or 16 bytes) || port (2 bytes, 0 when absent)).

    The receiver verifies with key_sender = the peer's key, key_receiver = its own.
    """
    try:
        raw_address = ipaddress.ip_address(address).packed
    except (ValueError, TypeError):
        raise WireError("mptcp.add_addr.address", f"not an IP address: {address!r}") from None
    if not 0 <= address_id <= 0xFF:
        raise WireError("mptcp.add_addr.address_id", f"must be 0..255, got {address_id}")
    port_value = 0 if port is None else port
    if not 0 <= port_value <= 0xFFFF:
        raise WireError("mptcp.add_addr.port", f"must be 0..65535, got {port}")
    message = bytes((address_id,)) + raw_address + port_value.to_bytes(2, "big")
    digest = hmac_sha256(_key_pair(key_sender, key_receiver, "mptcp.add_addr.key"), message)
    return int.from_bytes(digest[-8:], "big")
