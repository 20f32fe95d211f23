"""What a subflow has sent and not yet had cumulatively acknowledged: the SACK scoreboard.

Each transmitted segment is one `SentSegment` (kept with its payload so a retransmission is
rebuilt from our own state, never from a Packet handed out). Offsets are relative to the
subflow ISN (SYN = 0, first payload byte = 1). The scoreboard tracks `pipe` (RFC 6675: bytes
believed in flight) incrementally so the send path never has to sum over the window.

Loss is declared per RFC 6675's IsLost(): a hole is lost once DupThresh segments, or
(DupThresh - 1) * MSS + 1 bytes, above it have been SACKed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class SentSegment:
    start: int
    end: int  # exclusive; includes the FIN's sequence slot when fin is set
    payload: bytes
    dsn: int | None  # DSN of the first payload byte (None: not mapped, e.g. fallback)
    fin: bool = False
    data_fin: bool = False
    sent_at: float = 0.0
    transmissions: int = 1
    sacked: bool = False
    lost: bool = False
    in_flight: bool = True
    epoch: int = 0  # the connection's fallback epoch when first sent

    @property
    def length(self) -> int:
        return self.end - self.start


class Scoreboard:
    __slots__ = ("_segments", "dupthresh", "highest_sacked", "lost_count", "pipe",
                 "sacked_bytes")

    def __init__(self, *, dupthresh: int = 3) -> None:
        self._segments: deque[SentSegment] = deque()
        self.pipe = 0
        self.sacked_bytes = 0
        self.highest_sacked = 0
        self.lost_count = 0  # segments marked lost and not yet retransmitted
        self.dupthresh = dupthresh

    def __len__(self) -> int:
        return len(self._segments)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._segments)

    def first(self) -> SentSegment | None:
        return self._segments[0] if self._segments else None

    def add(self, segment: SentSegment) -> None:
        self._segments.append(segment)
        self.pipe += segment.length

    def acknowledge(self, ack: int) -> list[SentSegment]:
        """Drop every segment fully below the cumulative ACK; return them (oldest first).

        A segment partly acknowledged (a middlebox re-segmented, or the peer trimmed) is
        cut down so its remaining bytes can still be retransmitted.
        """
        done: list[SentSegment] = []
        segments = self._segments
        while segments and segments[0].end <= ack:
            seg = segments.popleft()
            if seg.in_flight:
                self.pipe -= seg.length
            if seg.sacked:
                self.sacked_bytes -= seg.length
            if seg.lost:
                self.lost_count -= 1
            done.append(seg)
        if segments and segments[0].start < ack:
            seg = segments[0]
            cut = ack - seg.start
            if seg.in_flight:
                self.pipe -= cut
            if seg.sacked:
                self.sacked_bytes -= cut
            payload_cut = min(cut, len(seg.payload))
            seg.payload = seg.payload[payload_cut:]
            if seg.dsn is not None:
                seg.dsn += payload_cut
            seg.start = ack
        return done

    def apply_sack(self, blocks: list[tuple[int, int]]) -> int:
        """Mark segments fully inside SACK blocks; return the number of bytes newly SACKed."""
        newly = 0
        for left, right in blocks:
            for seg in self._segments:
                if seg.start >= right:
                    break
                if seg.sacked or seg.start < left or seg.end > right:
                    continue
                seg.sacked = True
                self.sacked_bytes += seg.length
                newly += seg.length
                if seg.in_flight:
                    seg.in_flight = False
                    self.pipe -= seg.length
                if seg.end > self.highest_sacked:
                    self.highest_sacked = seg.end
        return newly

    def detect_losses(self, mss: int) -> list[SentSegment]:
        """Mark holes below SACKed data as lost (RFC 6675 IsLost); return newly lost ones."""
        if not self.sacked_bytes:
            return []
        lost: list[SentSegment] = []
        sacked_above = 0
        sacked_count = 0
        threshold_bytes = (self.dupthresh - 1) * mss + 1
        for seg in reversed(self._segments):
            if seg.sacked:
                sacked_above += seg.length
                sacked_count += 1
                continue
            if seg.start >= self.highest_sacked:
                continue
            if seg.lost or seg.transmissions > 1:
                continue  # already retransmitted once: only the RTO resends it again
            if sacked_count >= self.dupthresh or sacked_above >= threshold_bytes:
                self.mark_lost(seg)
                lost.append(seg)
        lost.reverse()
        return lost

    def mark_lost(self, seg: SentSegment) -> None:
        if seg.lost or seg.sacked:
            return
        seg.lost = True
        self.lost_count += 1
        if seg.in_flight:
            seg.in_flight = False
            self.pipe -= seg.length

    def mark_all_lost(self) -> None:
        """After an RTO every un-SACKed segment is considered lost (RFC 6675 section 5.1)."""
        for seg in self._segments:
            self.mark_lost(seg)

    def on_retransmit(self, seg: SentSegment, now: float) -> None:
        if seg.lost:
            seg.lost = False
            self.lost_count -= 1
        seg.transmissions += 1
        seg.sent_at = now
        if not seg.in_flight:
            seg.in_flight = True
            self.pipe += seg.length

    def next_lost(self) -> SentSegment | None:
        """The oldest segment marked lost and not yet retransmitted since."""
        if not self.lost_count:
            return None
        for seg in self._segments:
            if seg.lost:
                return seg
        return None

    def unacked(self) -> list[SentSegment]:
        return list(self._segments)

    def clear(self) -> list[SentSegment]:
        segments = list(self._segments)
        self._segments.clear()
        self.pipe = 0
        self.sacked_bytes = 0
        self.lost_count = 0
        return segments
