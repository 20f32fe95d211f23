"""Handshake, join and per-subflow delivery timings of one MPTCP connection, from its capture.

On a satellite path the round trip (1.2 s at 600 ms one way, 10 s at 5 s) is longer than the
1 s initial retransmission timeout, so SYNs and SYN/ACKs are sent again before any answer can
arrive; Linux also stops offering MP_CAPABLE after `net.mptcp.syn_retrans_before_tcp_fallback`
(2) SYN retransmissions, so whether the connection is MPTCP at all depends on the delay. This
module reads what happened from the packets (a capture taken on the client), per subflow:
every SYN (and whether it carried MP_CAPABLE or MP_JOIN), the first SYN/ACK, the third ACK,
the server's first ACK after it (which completes a join, RFC 8684 3.2), and new payload bytes
per time bin. Times are seconds since the first SYN of the capture.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.analyze.capture import open_capture
from testbed.wire import WireError
from testbed.wire.tcp_options import decode_options_at
from testbed.wire.types import MpCapable, MpJoinAck, MpJoinSyn

_TCP = struct.Struct("!HHIIBBH")
_SYN, _ACK = 0x02, 0x10
_MOD32 = 1 << 32


@dataclass
class SubflowTimes:
    """One subflow (client address:port) as its packets show it."""

    client: str
    kind: str = "tcp"  # "mp_capable" or "join" if its first SYN carried that option
    syn_times: list[float] = field(default_factory=list)
    syns_with_mptcp: int = 0
    synack_s: float | None = None
    synacks: int = 0
    synack_mptcp: bool = False
    third_ack_s: float | None = None
    third_ack_mptcp: bool = False  # MP_CAPABLE with both keys, or MP_JOIN with the HMAC
    fourth_ack_s: float | None = None  # the server's first ACK after the third ACK
    first_payload_s: float | None = None
    last_payload_s: float | None = None
    payload_bytes: int = 0  # new bytes (retransmissions not counted), both directions
    bins: dict[int, int] = field(default_factory=dict)  # bin index -> new payload bytes

    @property
    def syn_retransmissions(self) -> int:
        return max(0, len(self.syn_times) - 1)

    @property
    def handshake_s(self) -> float | None:
        """First SYN to the third ACK (what the client waited before it could send)."""
        if self.third_ack_s is None or not self.syn_times:
            return None
        return self.third_ack_s - self.syn_times[0]

    @property
    def fell_back(self) -> bool:
        """An MPTCP SYN whose handshake ended without MPTCP (SYN retried without the option, or
        a third ACK without it)."""
        return self.kind != "tcp" and self.third_ack_s is not None and not self.third_ack_mptcp

    def as_dict(self) -> dict[str, Any]:
        return {"client": self.client, "kind": self.kind, "first_syn_s": _round(self.syn_times[0])
                if self.syn_times else None, "syns": len(self.syn_times),
                "syns_with_mptcp": self.syns_with_mptcp, "synack_s": _round(self.synack_s),
                "synacks": self.synacks, "synack_mptcp": self.synack_mptcp,
                "third_ack_s": _round(self.third_ack_s), "third_ack_mptcp": self.third_ack_mptcp,
                "fourth_ack_s": _round(self.fourth_ack_s), "handshake_s": _round(self.handshake_s),
                "first_payload_s": _round(self.first_payload_s),
                "last_payload_s": _round(self.last_payload_s), "payload_bytes": self.payload_bytes}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def subflow_times(capture: Path, server_port: int, bin_s: float = 0.5) -> list[SubflowTimes]:
    """Every subflow to `server_port` in the capture, in the order of their first SYN."""
    subflows: dict[str, SubflowTimes] = {}
    highest: dict[tuple[str, bool], int] = {}  # (subflow, from server) -> highest relative seq end
    isn: dict[tuple[str, bool], int] = {}
    first: float | None = None
    for ts, frame, offset, version in open_capture(capture):
        if version != 4 or len(frame) < offset + 20 or frame[offset + 9] != 6:
            continue
        ihl = (frame[offset] & 0x0F) * 4
        tcp = offset + ihl
        if len(frame) < tcp + 20:
            continue
        sport, dport, seq, _ack, offset_byte, flags, _window = _TCP.unpack_from(frame, tcp)
        if server_port not in (sport, dport):
            continue
        from_server = sport == server_port
        client_ip = frame[offset + 16:offset + 20] if from_server else frame[offset + 12:offset + 16]
        client = f"{'.'.join(str(b) for b in client_ip)}:{dport if from_server else sport}"
        header = (offset_byte >> 4) * 4
        options = _options(frame, tcp + 20, min(tcp + header, len(frame)))
        if flags & _SYN and not from_server and first is None:
            first = ts
        if first is None:
            continue
        t = ts - first
        sub = subflows.get(client)
        if flags & _SYN:
            if not from_server:
                if sub is None:
                    sub = subflows[client] = SubflowTimes(client)
                    sub.kind = ("mp_capable" if any(isinstance(o, MpCapable) for o in options) else
                                "join" if any(isinstance(o, MpJoinSyn) for o in options) else "tcp")
                sub.syn_times.append(t)
                sub.syns_with_mptcp += any(isinstance(o, MpCapable | MpJoinSyn) for o in options)
            elif sub is not None:
                sub.synacks += 1
                if sub.synack_s is None:
                    sub.synack_s = t
                    sub.synack_mptcp = _has_mptcp(options)
            isn[(client, from_server)] = seq
            continue
        if sub is None:
            continue
        if not from_server and sub.synack_s is not None and sub.third_ack_s is None and flags & _ACK:
            sub.third_ack_s = t
            sub.third_ack_mptcp = any(isinstance(o, MpJoinAck) or (isinstance(o, MpCapable)
                                                                   and o.receiver_key is not None)
                                      for o in options)
        elif from_server and sub.third_ack_s is not None and sub.fourth_ack_s is None and flags & _ACK:
            sub.fourth_ack_s = t
        length = ((frame[offset + 2] << 8) | frame[offset + 3]) - ihl - header
        key = (client, from_server)
        if length > 0 and key in isn:
            end = (seq - isn[key] - 1) % _MOD32 + length
            new = end - highest.get(key, 0)
            if new > 0:
                highest[key] = end
                sub.payload_bytes += new
                index = int(t / bin_s)
                sub.bins[index] = sub.bins.get(index, 0) + new
                sub.first_payload_s = t if sub.first_payload_s is None else sub.first_payload_s
                sub.last_payload_s = t
    return sorted(subflows.values(), key=lambda s: s.syn_times[0])


def _options(frame: bytes, start: int, end: int) -> list[Any]:
    if end <= start:
        return []
    try:
        return decode_options_at(frame, start, end)
    except WireError:
        return []  # a malformed option: this segment tells us nothing


def _has_mptcp(options: list[Any]) -> bool:
    return any(type(o).__name__.startswith("Mp") for o in options)
