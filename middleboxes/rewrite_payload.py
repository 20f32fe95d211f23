"""rewrite_payload: an application-level gateway that replaces a byte pattern in payloads.

Imitates ALGs such as the FTP helper of NATs (Linux nf_nat_ftp rewriting PORT/PASV lines), SIP
ALGs and transparent "fix-up" proxies. When the replacement has a different length the box
must keep the connection consistent: it remembers, per flow and direction, where it changed
the length and by how much, shifts the sequence numbers of later segments, and shifts the
acknowledgements (and SACK blocks) travelling the other way back (as nf_conntrack_seqadj does).
MPTCP cannot see this at the TCP level: only the DSS checksum (RFC 8684 §3.3.1) detects the
edit, otherwise the data-level stream is silently corrupted. That is what experiments with
this box are for.

Matching is per segment, as real ALGs do: a pattern split across two segments is not found.
A segment that grows past `mtu_bytes` is cut in pieces, as the output path's GSO would; a
real ALG on a full-size segment with DF set would otherwise blackhole the flow (it only ever
meets short control segments). A retransmitted segment gets the same edit without counting
the length change twice. Edits below the receiver's cumulative ACK are folded into one offset
to bound memory, so an ACK older than one already seen maps only approximately (never beyond
what was already acknowledged).

Every edit is also logged exactly, once (`edit_log`, exported with the box's counters): the
flow, the direction, the offset in the stream as the sender sent it (0 = the flow's first
payload byte), the old and the new bytes. The integrity oracle (testbed.integrity) rebuilds
from it the stream a plain TCP connection through this box delivers.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field
from typing import Any, Literal

from middleboxes.catalogue_base import MiddleboxBase
from middleboxes.contract import Direction
from middleboxes.flows import (
    SEQ_MASK,
    FlowKey,
    SeqUnwrapper,
    flow_key,
    ip_and_tcp_header_bytes,
    packet_flow_label,
)
from middleboxes.spec import CommonParams, ParamError, directions_of, param
from middleboxes.split import cut_segment
from testbed.wire.tcp_options import MAX_OPTIONS_LENGTH, options_length
from testbed.wire.types import ACK, SYN, Packet, Sack


@dataclass(frozen=True, kw_only=True)
class RewritePayloadParams(CommonParams):
    pattern: str = param(doc="text to find (UTF-8; TOML escapes such as \\r\\n work)")
    replacement: str = param(doc="text to put in its place (may differ in length)")
    direction: Literal["upstream", "downstream", "both"] = param(
        "both", "direction of the payloads to rewrite")
    limit: int = param(0, "rewrite at most this many occurrences per flow and direction "
                       "(0 = all); an ALG edits a few control lines, not every match",
                       minimum=0)
    edit_log_limit: int = param(10000, "log at most this many edits (offset, old and new bytes) "
                                "for the integrity oracle; edits beyond it are only counted",
                                minimum=0)
    mtu_bytes: int = param(1500, "a segment that grows beyond this IP packet size leaves cut "
                           "in pieces (options copied, as GSO does) instead of being lost; "
                           "0 = never cut", minimum=0, maximum=65535)

    def check(self) -> None:
        if not self.pattern:
            raise ParamError("pattern", "must not be empty")
        if self.mtu_bytes and self.mtu_bytes < 41 + MAX_OPTIONS_LENGTH:
            raise ParamError("mtu_bytes", f"got {self.mtu_bytes}, must be 0 or at least "
                                          f"{41 + MAX_OPTIONS_LENGTH} (headers, full options "
                                          f"and one byte)")


@dataclass
class _StreamEdits:
    """Length changes made in one direction of one flow, in unwrapped stream positions.

    positions[k] is where the k-th remembered edit starts in the original stream, deltas[k]
    its length change, cumulative[k] the total change up to and including it. Edits that the
    receiver has acknowledged are folded into `base_shift` so memory stays bounded by the
    data in flight rather than growing with the flow.
    """

    unwrapper: SeqUnwrapper
    origin: int  # unwrapped position of the flow's first payload byte (offset 0 of the edit log)
    from_syn: bool  # origin is the byte after the SYN (else the first byte this box saw)
    positions: list[int] = field(default_factory=list)
    deltas: list[int] = field(default_factory=list)
    cumulative: list[int] = field(default_factory=list)
    base_position: int = -(1 << 62)  # edits before this are folded into base_shift
    base_shift: int = 0
    edited: set[int] = field(default_factory=set)  # positions edited, kept only under a limit
    logged: set[int] = field(default_factory=set)  # positions already in the edit log

    def shift_before(self, position: int) -> int:
        """Total length change of edits that start strictly before `position`."""
        index = bisect.bisect_left(self.positions, position)
        return self.cumulative[index - 1] if index else self.base_shift

    def record(self, position: int, delta: int) -> bool:
        """Remember an edit; False when it was already known (a retransmission)."""
        if position < self.base_position:
            return False
        index = bisect.bisect_left(self.positions, position)
        if index < len(self.positions) and self.positions[index] == position:
            return False
        self.positions.insert(index, position)
        self.deltas.insert(index, delta)
        previous = self.cumulative[index - 1] if index else self.base_shift
        del self.cumulative[index:]
        for k in range(index, len(self.positions)):
            previous += self.deltas[k]
            self.cumulative.append(previous)
        return True

    def original_of(self, rewritten: int, pattern_length: int) -> int:
        """Map a position of the rewritten stream (an ACK or SACK edge) to the original one.

        An edge inside a replacement maps to the start of the original pattern: the receiver
        has not got all of the replacement, so none of the pattern counts as received.
        """
        shift = self.base_shift
        for position, delta, total in zip(self.positions, self.deltas, self.cumulative, strict=True):
            start = position + shift  # where the replacement starts in the rewritten stream
            if rewritten >= start + pattern_length + delta:  # all of the replacement received
                shift = total
                continue
            if rewritten <= start:
                break
            return position
        return rewritten - shift

    def forget_acknowledged(self, acked: int, pattern_length: int) -> None:
        """Fold edits wholly below the original position `acked` into the base shift."""
        count = 0
        while count < len(self.positions) and self.positions[count] + pattern_length <= acked:
            count += 1
        if count:
            self.base_shift = self.cumulative[count - 1]
            self.base_position = self.positions[count - 1] + pattern_length
            del self.positions[:count], self.deltas[:count], self.cumulative[:count]


class EditLog:
    """Every payload edit of one box, once each, in the order made (retransmissions excluded).

    Offsets are per flow and direction, at the sender's side of the box, relative to the
    flow's first payload byte. Beyond `limit` entries edits are only counted in `overflow`,
    and the oracle then knows it cannot rebuild the edited stream.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.entries: list[dict[str, Any]] = []
        self.overflow = 0

    @property
    def full(self) -> bool:
        return len(self.entries) >= self.limit

    def record(self, packet: Packet, direction: Direction, offset: int, old: bytes, new: bytes,
               from_syn: bool) -> None:
        if self.full:
            self.overflow += 1
            return
        self.entries.append({"flow": packet_flow_label(packet), "direction": direction.value,
                             "offset": offset, "old": old.hex(), "new": new.hex(),
                             "shift": len(new) - len(old), "from_syn": from_syn})

    def export(self) -> dict[str, Any]:
        return {"entries": list(self.entries), "overflow": self.overflow}


class RewritePayload(MiddleboxBase):
    name = "rewrite_payload"
    imitates = "application-level gateway (FTP/SIP ALG of NATs, e.g. Linux nf_nat_ftp)"
    params_type = RewritePayloadParams

    def __init__(self, params: RewritePayloadParams, rng: random.Random) -> None:
        super().__init__(params, rng)
        self.params: RewritePayloadParams = params
        self._pattern = params.pattern.encode()
        self._replacement = params.replacement.encode()
        self._delta = len(self._replacement) - len(self._pattern)
        self._directions = directions_of(params.direction)
        self._streams: dict[tuple[FlowKey, Direction], _StreamEdits] = {}
        self.edit_log = EditLog(params.edit_log_limit)

    def remembered_edits(self) -> int:
        """Length-changing edits still remembered (not yet acknowledged) across all flows."""
        return sum(len(stream.positions) for stream in self._streams.values())

    def process(self, packet: Packet, direction: Direction, now: float) -> list[Packet]:
        self.counters.seen += 1
        key = flow_key(packet, direction)
        tcp = packet.tcp
        changes: list[str] = []
        stream = (self._stream(key, direction, tcp.seq, bool(tcp.flags & SYN))
                  if direction in self._directions else None)
        length_before = len(tcp.payload)
        if stream is not None:
            changes.extend(self._rewrite_forward(packet, direction, stream))
        reverse = self._streams.get((key, direction.reverse()))
        if reverse is not None and (reverse.positions or reverse.base_shift):
            changes.extend(self._fix_acks(packet, reverse))
        out = [packet]
        room = self._room_for(packet) if len(tcp.payload) > length_before else None
        if room is not None:
            out = cut_segment(packet, room, lambda options, index: list(options))
            self.counters.injected += len(out) - 1
            changes.append(f"cut into {len(out)} pieces to fit mtu_bytes")
        if changes:
            self.counters.changed += 1
            self.change_log.record(now, direction, packet, ", ".join(changes))
        return out

    def _room_for(self, packet: Packet) -> int | None:
        """Payload bytes per piece when the grown packet exceeds mtu_bytes, else None."""
        mtu = self.params.mtu_bytes
        if not mtu or packet.tcp.flags & SYN:
            return None
        headers = ip_and_tcp_header_bytes(packet)  # 40 on IPv4, 60 or more on IPv6
        if len(packet.tcp.payload) <= mtu - headers - MAX_OPTIONS_LENGTH:
            return None  # fits whatever the options are; skip computing their length
        room = mtu - headers - options_length(packet.tcp.options)
        return room if len(packet.tcp.payload) > room else None

    def _stream(self, key: FlowKey, direction: Direction, seq: int, syn: bool) -> _StreamEdits:
        slot = (key, direction)
        stream = self._streams.get(slot)
        if stream is None:
            unwrapper = SeqUnwrapper(seq)
            # the SYN's sequence number is the ISN; a box that joins mid-flow counts from the
            # first byte it sees (the log says so: `from_syn`)
            stream = _StreamEdits(unwrapper, unwrapper.unwrap(seq) + (1 if syn else 0), syn)
            self._streams[slot] = stream
        return stream

    def _rewrite_forward(self, packet: Packet, direction: Direction, stream: _StreamEdits) -> list[str]:
        tcp = packet.tcp
        start = stream.unwrapper.unwrap(tcp.seq)
        payload_start = start + 1 if tcp.flags & SYN else start
        changes: list[str] = []
        if self._pattern in tcp.payload:
            pieces: list[bytes] = []
            cursor = 0
            count = 0
            limit = self.params.limit
            while (index := tcp.payload.find(self._pattern, cursor)) >= 0:
                position = payload_start + index
                if limit and position not in stream.edited:
                    if len(stream.edited) >= limit:  # keep this occurrence as it is
                        end = index + len(self._pattern)
                        pieces.append(tcp.payload[cursor:end])
                        cursor = end
                        continue
                    stream.edited.add(position)
                pieces.append(tcp.payload[cursor:index])
                pieces.append(self._replacement)
                if position not in stream.logged:  # a retransmission is edited, not logged, again
                    if not self.edit_log.full:
                        stream.logged.add(position)
                    self.edit_log.record(packet, direction, position - stream.origin,
                                         self._pattern, self._replacement, stream.from_syn)
                cursor = index + len(self._pattern)
                count += 1
                if self._delta:
                    stream.record(position, self._delta)
            if count:
                pieces.append(tcp.payload[cursor:])
                tcp.payload = b"".join(pieces)
                changes.append(f"replaced {count} occurrence(s) ({self._delta:+d} bytes each)")
        shift = stream.shift_before(payload_start)
        if shift:
            old = tcp.seq
            tcp.seq = (tcp.seq + shift) & SEQ_MASK
            changes.append(f"seq {old}->{tcp.seq}" if self.change_log.enabled else "seq")
        return changes

    def _fix_acks(self, packet: Packet, reverse: _StreamEdits) -> list[str]:
        """Shift ACK and SACK edges about the rewritten stream back to original positions."""
        tcp = packet.tcp
        changes: list[str] = []
        length = len(self._pattern)

        def to_original(edge: int) -> int:
            unwrapped = reverse.unwrapper.peek(edge)
            return (edge + reverse.original_of(unwrapped, length) - unwrapped) & SEQ_MASK

        if tcp.flags & ACK:
            unwrapped = reverse.unwrapper.peek(tcp.ack)
            original = reverse.original_of(unwrapped, length)
            new_ack = (tcp.ack + original - unwrapped) & SEQ_MASK
            if new_ack != tcp.ack:
                changes.append(f"ack {tcp.ack}->{new_ack}" if self.change_log.enabled else "ack")
                tcp.ack = new_ack
            reverse.forget_acknowledged(original, length)
        for index, option in enumerate(tcp.options):
            if isinstance(option, Sack):
                blocks = tuple((to_original(left), to_original(right))
                               for left, right in option.blocks)
                if blocks != option.blocks:
                    tcp.options[index] = Sack(blocks)
                    changes.append(f"sack {list(option.blocks)}->{list(blocks)}")
        return changes
