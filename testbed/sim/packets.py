"""Packet handling shared by links: copying before edits, and the optional codec round trip.

Ownership (testbed.wire.types): a receiver owns the Packet it gets. A middlebox edits packets in
place, so a link copies a packet before its middleboxes see it; with the codec on, the decode at
each hop already yields a fresh object, and the round trip exercises encoding, decoding and
checksums on every packet that crosses the simulated network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from testbed.wire.tcp_options import options_length
from testbed.wire.types import Packet, TcpSegment

IPV4_HEADER = 20
IPV6_HEADER = 40
TCP_HEADER = 20


def packet_size(packet: Packet) -> int:
    """Bytes the packet takes on the wire (IP + TCP header + padded options + payload), without
    encoding it: what a link serializes when the codec is not run per hop."""
    segment = packet.tcp
    ip_header = IPV6_HEADER if ":" in packet.dst else IPV4_HEADER
    return ip_header + TCP_HEADER + options_length(segment.options) + len(segment.payload)


def copy_packet(packet: Packet) -> Packet:
    """A copy that shares nothing mutable with `packet` (options are frozen, payload is bytes)."""
    segment = packet.tcp
    return Packet(
        src=packet.src,
        dst=packet.dst,
        tcp=TcpSegment(
            src_port=segment.src_port,
            dst_port=segment.dst_port,
            seq=segment.seq,
            ack=segment.ack,
            flags=segment.flags,
            window=segment.window,
            options=list(segment.options),
            payload=segment.payload,
            urgent=segment.urgent,
            checksum=segment.checksum,
        ),
        ttl=packet.ttl,
        ident=packet.ident,
        tos=packet.tos,
        dont_fragment=packet.dont_fragment,
    )


@dataclass(frozen=True, slots=True)
class WireCodec:
    """The codec functions a hop uses: Packet -> bytes, bytes -> Packet, and a check of the
    IPv4 and TCP checksums of the bytes (None skips the check)."""

    encode: Callable[[Packet], bytes]
    decode: Callable[[bytes], Packet]
    verify: Callable[[bytes], bool] | None = None


def load_wire_codec() -> WireCodec:
    """testbed.wire's encode_packet/decode_packet, imported late so the simulator runs (with
    the codec off) even in a tree where the codec is broken."""
    try:
        from testbed.wire import (  # type: ignore[attr-defined]
            decode_packet,
            encode_packet,
            verify_checksums,
        )
    except ImportError as error:
        raise ImportError(
            "testbed.sim: codec round trip requested but testbed.wire has no "
            f"encode_packet/decode_packet ({error}); pass codec=False"
        ) from error
    return WireCodec(encode=encode_packet, decode=decode_packet, verify=verify_checksums)
