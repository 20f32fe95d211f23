"""The TCP level of one subflow as a capture shows it: sequence space, bytes, retransmissions,
RTT from data/ACK pairs, flight size, and how it ended.

A subflow has two directions; side 0 is the end that sent the SYN (or, for a connection whose
handshake is not in the capture, the end first seen sending). Sequence numbers are kept
relative to each direction's ISN and unwrapped to 64 bits, so captures longer than 4 GiB of one
direction still count right. Time series are kept per bin (`bin_s`), so memory grows with the
capture's duration over the bin width, never with its packet count.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from testbed.net.topo import host_port

_M32 = 0xFFFFFFFF
_HALF = 1 << 31
RTT_PENDING_LIMIT = 4096  # first transmissions waiting for their ACK, per direction
HOLE_LIMIT = 4096  # gaps in the captured sequence space remembered per direction

# bin fields of a direction: new payload bytes, retransmitted bytes, highest ACK (relative),
# largest flight, RTT sum (s), RTT samples
B_SENT, B_RETRANS, B_ACKED, B_FLIGHT, B_RTT_SUM, B_RTT_N = range(6)


class Direction:
    """What one end of a subflow sent, and what the other end acknowledged of it."""

    __slots__ = (
        "acked",
        "base",
        "bins",
        "bytes_retrans",
        "bytes_sent",
        "fin",
        "fin_rel",
        "first_ts",
        "high",
        "holes",
        "isn_seen",
        "last_ts",
        "pending",
        "retrans_segments",
        "rst",
        "rtt_count",
        "rtt_min",
        "rtt_sum",
        "segments",
        "unseen",
        "window_max",
    )

    def __init__(self) -> None:
        self.base: int | None = None  # ISN (sequence number of the SYN), or guessed
        self.isn_seen = False
        self.high = 0  # highest relative sequence sent + 1 (SYN counts 1)
        self.acked = 0  # highest relative sequence the other end acknowledged
        self.bytes_sent = 0  # payload bytes incl. retransmissions (tcpi_bytes_sent)
        self.bytes_retrans = 0
        self.retrans_segments = 0
        self.segments = 0
        self.unseen = 0  # sequence space skipped between captured segments, beyond HOLE_LIMIT
        self.holes: list[list[int]] = []  # [start, end) not (yet) in the capture
        self.fin = False
        self.fin_rel: int | None = None
        self.rst = False
        self.pending: deque[tuple[int, float]] = deque()
        self.rtt_min: float | None = None
        self.rtt_sum = 0.0
        self.rtt_count = 0
        self.bins: dict[int, list[float]] = {}
        self.first_ts: float | None = None
        self.last_ts = 0.0
        self.window_max = 0
        self.unseen = 0  # sequence space skipped between captured segments, beyond HOLE_LIMIT
        self.holes: list[list[int]] = []  # [start, end) not (yet) in the capture

    def relative(self, value: int, last: int) -> int:
        """`value` (32-bit) relative to the ISN, unwrapped to the 64-bit value nearest `last`."""
        rel = (value - self.base) & _M32  # type: ignore[operator]
        return last + ((rel - (last & _M32) + _HALF) & _M32) - _HALF

    def bin(self, index: int) -> list[float]:
        entry = self.bins.get(index)
        if entry is None:
            entry = self.bins[index] = [0, 0, self.acked, 0, 0.0, 0]
        return entry

    def fill(self, start: int, end: int) -> int:
        """A segment covering [start, end) arrived: cut it out of the holes; returns how many
        of its bytes were in them (the capture had not seen them before)."""
        kept = []
        filled = 0
        for low, high in self.holes:
            if end <= low or start >= high:
                kept.append([low, high])
                continue
            filled += min(end, high) - max(start, low)
            if low < start:
                kept.append([low, start])
            if end < high:
                kept.append([end, high])
        self.holes = kept
        return filled

    @property
    def bytes_not_captured(self) -> int:
        """Sequence space between captured segments, or acknowledged beyond the last one, that
        the capture does not hold (dropped by the capture, lost before the capture point and
        never retransmitted through it, or sent before it started)."""
        return self.unseen + sum(high - low for low, high in self.holes) + max(0, self.acked - self.high)

    @property
    def bytes_acked(self) -> int:
        """Payload the other end acknowledged (tcpi_bytes_acked without the SYN and FIN); from
        the ACKs alone (not an RST's), so right even when the capture missed data segments."""
        fin_acked = self.fin_rel is not None and self.acked > self.fin_rel
        return max(0, self.acked - 1 - (1 if fin_acked else 0))


class Subflow:
    """One TCP connection (an MPTCP subflow or a plain TCP connection) seen in the capture."""

    def __init__(self, index: int, ts: float, addresses: tuple[str, str], ports: tuple[int, int],
                 keys: tuple[bytes, bytes], handshake: bool) -> None:
        self.index = index
        self.addresses = addresses  # side 0, side 1
        self.ports = ports
        self.keys = keys  # flow keys of side 0's and side 1's packets
        self.handshake = handshake
        self.dirs = (Direction(), Direction())
        self.start_ts = ts
        self.last_ts = ts
        self.connection: Any = None  # testbed.analyze.connection.Connection, once known
        self.conn_side = (0, 1)  # the connection side of subflow side 0 and side 1
        self.role = "tcp"  # initial, join, or tcp (no MPTCP seen)
        self.mptcp_version: int | None = None
        self.backup = [False, False]  # as requested by each side (MP_JOIN B bit, MP_PRIO)
        self.address_ids: list[int | None] = [None, None]
        self.join: dict[str, Any] = {}  # token, nonces, HMACs as seen
        self.syn_ack_seen = False
        self.fastclose = False
        self.reset_reason: str | None = None
        self.mappings: tuple[deque, deque] = (deque(maxlen=16), deque(maxlen=16))
        self.unmapped_bytes = 0
        self.dss_seen = False

    def endpoint(self, side: int) -> str:
        """"address:port" of one side, an IPv6 address in brackets ("[fd00::1]:5201")."""
        return host_port(self.addresses[side], self.ports[side])

    def side_of(self, key: bytes) -> int:
        return 0 if key == self.keys[0] else 1

    def segment(self, side: int, ts: float, seq: int, ack: int, flags: int, window: int,
                length: int, bin_index: int) -> tuple[int, bool]:
        """Account one segment from `side`; returns (relative sequence, whether its payload
        was sent before). The hot path of the analysis: relative() is written out inline."""
        own = self.dirs[side]
        self.last_ts = ts
        if own.base is None:
            own.base = (seq - 1) & _M32 if not flags & 0x02 else seq
            own.isn_seen = bool(flags & 0x02)
            own.high = 1
            own.first_ts = ts
        own.last_ts = ts
        own.segments += 1
        if window > own.window_max:
            own.window_max = window
        high = own.high
        rel = high + (((seq - own.base - high) + _HALF) & _M32) - _HALF
        retransmitted = False
        if length:
            end = rel + length
            own.bytes_sent += length
            entry = own.bins.get(bin_index) or own.bin(bin_index)
            if rel < high:
                overlap = min(end, high) - rel
                own.bytes_retrans += overlap
                own.retrans_segments += 1
                entry[B_RETRANS] += overlap
                # a retransmission of what the capture did see; one that only fills a hole
                # (its first copy was dropped before the capture point, by the sender's own
                # qdisc for instance) is the first sighting of those bytes on this subflow
                retransmitted = not own.holes or own.fill(rel, end) < overlap
                own.pending.clear()  # Karn: no RTT sample across a retransmission
            if end > high:
                if rel > high:  # sent, but not in the capture (yet: a retransmission may fill it)
                    if len(own.holes) < HOLE_LIMIT:
                        own.holes.append([high, rel])
                    else:
                        own.unseen += rel - high
                entry[B_SENT] += end - (rel if rel > high else high)
                own.high = high = end
                if not retransmitted and len(own.pending) < RTT_PENDING_LIMIT:
                    own.pending.append((end, ts))
            flight = high - own.acked
            if flight > entry[B_FLIGHT]:
                entry[B_FLIGHT] = flight
        if flags & 0x07:  # SYN, FIN (one sequence number each), RST
            if flags & 0x03:
                end = rel + length + 1
                if flags & 0x01:
                    own.fin = True
                    own.fin_rel = rel + length
                if end > own.high:
                    own.high = end
            if flags & 0x04:
                own.rst = True
        other = self.dirs[1 - side]
        if flags & 0x10 and not flags & 0x04 and not other.rst:
            # Acknowledged means acknowledged to a sender that takes it (as tcpi_bytes_acked):
            # an RST's ACK field is never processed (the reset is handled first, Linux's
            # tcp_validate_incoming), and ACKs reaching an end after it sent an RST find the
            # subflow closed there
            if other.base is None:
                other.base = (ack - 1) & _M32
                other.high = 1
            last = other.acked
            acked = last + (((ack - other.base - last) + _HALF) & _M32) - _HALF
            if acked > last:
                other.acked = acked
                pending = other.pending
                sent_at = None
                while pending and pending[0][0] <= acked:
                    sent_at = pending.popleft()[1]
                entry = other.bins.get(bin_index) or other.bin(bin_index)
                entry[B_ACKED] = acked
                if sent_at is not None:
                    rtt = ts - sent_at
                    entry[B_RTT_SUM] += rtt
                    entry[B_RTT_N] += 1
                    other.rtt_sum += rtt
                    other.rtt_count += 1
                    if other.rtt_min is None or rtt < other.rtt_min:
                        other.rtt_min = rtt
        return rel, retransmitted

    def end_reason(self, capture_end: float, timeout_s: float) -> str:
        """How the subflow ended, as the capture shows it."""
        if self.fastclose:
            return "MP_FASTCLOSE"
        if self.dirs[0].rst or self.dirs[1].rst:
            return f"RST ({self.reset_reason})" if self.reset_reason else "RST"
        if self.dirs[0].fin and self.dirs[1].fin:
            return "FIN"
        if self.dirs[0].fin or self.dirs[1].fin:
            return "FIN (one direction)"
        if capture_end - self.last_ts >= timeout_s:
            return "timeout"
        return "open at end of capture"

    def summary(self, capture_start: float, capture_end: float, timeout_s: float) -> dict[str, Any]:
        directions = []
        for side, direction in enumerate(self.dirs):
            directions.append({
                "from": self.endpoint(side),
                "segments": direction.segments,
                "bytes_sent": direction.bytes_sent,
                "bytes_acked": direction.bytes_acked,
                "bytes_retrans": direction.bytes_retrans,
                "bytes_not_captured": direction.bytes_not_captured,
                "retransmitted_segments": direction.retrans_segments,
                "rtt_ms_mean": round(1000 * direction.rtt_sum / direction.rtt_count, 3)
                if direction.rtt_count else None,
                "rtt_ms_min": round(1000 * direction.rtt_min, 3) if direction.rtt_min is not None else None,
                "rtt_samples": direction.rtt_count,
                "isn_seen": direction.isn_seen,
                "fin": direction.fin,
                "rst": direction.rst,
            })
        return {
            "index": self.index,
            "role": self.role,
            "client": self.endpoint(0),
            "server": self.endpoint(1),
            "handshake_seen": self.handshake,
            "address_ids": self.address_ids,
            "backup": self.backup,
            "start_s": round(self.start_ts - capture_start, 6),
            "end_s": round(self.last_ts - capture_start, 6),
            "ended_by": self.end_reason(capture_end, timeout_s),
            "unmapped_bytes": self.unmapped_bytes,
            "directions": directions,
        }
