"""What a subflow has sent and not yet had cumulatively acknowledged: the SACK scoreboard.

Each transmitted segment is one `SentSegment` (kept with its payload so a retransmission is
rebuilt from our own state, never from a Packet handed out). Offsets are relative to the
subflow ISN (SYN = 0, first payload byte = 1). The scoreboard tracks `pipe` (RFC 6675: bytes
believed in flight) incrementally so the send path never has to sum over the window.

Loss is declared per RFC 6675's IsLost(): a hole is lost once DupThresh segments, or
(DupThresh - 1) * MSS + 1 bytes, above it have been SACKed.
"""

from __future__ import annotations

import copy
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(slots=True)
class SentSegment:
    start: int
    end: int  # exclusive; includes the FIN's sequence slot when fin is set
    payload: bytes | memoryview  # a view of the data-level send buffer's block, usually
    dsn: int | None  # DSN of the first payload byte (None: not mapped, e.g. fallback)
    fin: bool = False
    data_fin: bool = False
    sent_at: float = 0.0
    transmissions: int = 1
    sacked: bool = False
    lost: bool = False
    in_flight: bool = True

    @property
    def length(self) -> int:
        return self.end - self.start

    def __deepcopy__(self, memo: dict[int, object]) -> SentSegment:
        """A copy owns its payload's bytes (a memoryview cannot be copied, and a copied host,
        as the fuzzer snapshots them, must not share blocks with the original)."""
        copied = copy.copy(self)  # every other field is immutable
        copied.payload = bytes(self.payload)
        return copied


class Scoreboard:
    """Segments in sequence order in a list with a moving head (cheap pops from the front
    and bisection by start offset for SACK blocks)."""

    __slots__ = ("_head", "_hint", "_hint_sacked_bytes", "_hint_sacked_count", "_lost_from",
                 "_sack_seen",
                 "_segments", "dupthresh", "highest_sacked", "lost_count", "pipe",
                 "sacked_bytes", "sacked_count")

    def __init__(self, *, dupthresh: int = 3) -> None:
        self._segments: list[SentSegment] = []
        self._head = 0
        self.pipe = 0
        self.sacked_bytes = 0
        self.sacked_count = 0
        self.highest_sacked = 0
        self.lost_count = 0  # segments marked lost and not yet retransmitted
        self.dupthresh = dupthresh
        # the loss walk resumes at _hint: every segment below it is SACKed, lost or
        # already retransmitted; the _hint_* sums count the SACKed ones among them
        self._hint = 0
        self._hint_sacked_bytes = 0
        self._hint_sacked_count = 0
        self._sack_seen: dict[int, int] = {}  # SACK block left edge -> right edge processed
        # no segment below this index is marked lost: next_lost() resumes here instead of
        # rescanning the window from the head on every call
        self._lost_from = 0

    def __len__(self) -> int:
        return len(self._segments) - self._head

    def __iter__(self) -> Iterator[SentSegment]:
        return iter(self._segments[self._head:])

    def first(self) -> SentSegment | None:
        return self._segments[self._head] if self._head < len(self._segments) else None

    def add(self, segment: SentSegment) -> None:
        self._segments.append(segment)
        self.pipe += segment.end - segment.start

    def acknowledge(self, ack: int) -> list[SentSegment]:
        """Drop every segment fully below the cumulative ACK; return them (oldest first).

        A segment partly acknowledged (a middlebox re-segmented, or the peer trimmed) is
        cut down so its remaining bytes can still be retransmitted.
        """
        segments = self._segments
        head = self._head
        count = len(segments)
        first = head
        while head < count and segments[head].end <= ack:
            seg = segments[head]
            length = seg.end - seg.start
            if seg.in_flight:
                self.pipe -= length
            if seg.sacked:
                self.sacked_bytes -= length
                self.sacked_count -= 1
                if head < self._hint:
                    self._hint_sacked_bytes -= length
                    self._hint_sacked_count -= 1
            if seg.lost:
                self.lost_count -= 1
            head += 1
        done = segments[first:head]
        if self._hint < head:
            self._hint = head
        if head > 4096 and head * 2 > count:
            del segments[:head]
            self._hint -= head
            self._lost_from = max(0, self._lost_from - head)
            head = 0
        self._head = head
        if len(self._sack_seen) > 64:
            self._sack_seen.clear()
        if head < len(segments) and segments[head].start < ack:
            seg = segments[head]
            cut = ack - seg.start
            if seg.in_flight:
                self.pipe -= cut
            if seg.sacked:
                self.sacked_bytes -= cut
                if head < self._hint:
                    self._hint_sacked_bytes -= cut
            payload_cut = min(cut, len(seg.payload))
            seg.payload = seg.payload[payload_cut:]
            if seg.dsn is not None:
                seg.dsn += payload_cut
            seg.start = ack
        return done

    def apply_sack(self, blocks: list[tuple[int, int]]) -> int:
        """Mark segments fully inside SACK blocks; return the number of bytes newly SACKed."""
        newly = 0
        segments = self._segments
        count = len(segments)
        seen = self._sack_seen
        for left, right in blocks:
            done_to = seen.get(left, left)
            if done_to >= right:
                continue  # the same block as before: nothing new in it
            seen[left] = right
            # step back one: a segment straddling the old right edge may now fit
            index = max(self._head,
                        bisect_left(segments, done_to, self._head, count, key=_start_of) - 1)
            while index < count:
                seg = segments[index]
                index += 1
                if seg.start >= right:
                    break
                if seg.sacked or seg.end > right or seg.start < left:
                    continue
                length = seg.end - seg.start
                seg.sacked = True
                self.sacked_bytes += length
                self.sacked_count += 1
                if index - 1 < self._hint:
                    self._hint_sacked_bytes += length
                    self._hint_sacked_count += 1
                newly += length
                if seg.lost:
                    seg.lost = False
                    self.lost_count -= 1
                if seg.in_flight:
                    seg.in_flight = False
                    self.pipe -= length
                if seg.end > self.highest_sacked:
                    self.highest_sacked = seg.end
        return newly

    def detect_losses(self, mss: int) -> list[SentSegment]:
        """Mark holes below SACKed data as lost (RFC 6675 IsLost); return newly lost ones.

        Walks forward from the oldest segment; the SACKed bytes/segments above a hole only
        shrink as the walk advances, so it stops at the first hole that is not yet lost.
        """
        if not self.sacked_bytes:
            return []
        lost: list[SentSegment] = []
        sacked_above = self.sacked_bytes - self._hint_sacked_bytes
        sacked_count = self.sacked_count - self._hint_sacked_count
        threshold_bytes = (self.dupthresh - 1) * mss + 1
        segments = self._segments
        highest = self.highest_sacked
        index = max(self._hint, self._head)
        advancing = True
        while index < len(segments):
            seg = segments[index]
            if seg.start >= highest:
                break
            if seg.sacked:
                length = seg.end - seg.start
                sacked_above -= length
                sacked_count -= 1
                if advancing:
                    self._hint_sacked_bytes += length
                    self._hint_sacked_count += 1
                    self._hint = index + 1
            elif seg.lost or seg.transmissions > 1:
                # already lost or retransmitted once: only the RTO resends it again
                if advancing:
                    self._hint = index + 1
            elif sacked_count < self.dupthresh and sacked_above < threshold_bytes:
                break
            else:
                self.mark_lost(seg, index)
                lost.append(seg)
                if advancing:
                    self._hint = index + 1
            index += 1
        return lost

    def mark_lost(self, seg: SentSegment, index: int | None = None) -> None:
        """Mark `seg` lost; `index` is its place in the list when the caller knows it."""
        if seg.lost or seg.sacked:
            return
        seg.lost = True
        if index is None:
            self._lost_from = self._head
        elif index < self._lost_from:
            self._lost_from = index
        self.lost_count += 1
        if seg.in_flight:
            seg.in_flight = False
            self.pipe -= seg.end - seg.start

    def mark_all_lost(self) -> None:
        """After an RTO every un-SACKed segment is considered lost (RFC 6675 section 5.1)."""
        for index in range(self._head, len(self._segments)):
            self.mark_lost(self._segments[index])

    def on_retransmit(self, seg: SentSegment, now: float) -> None:
        if seg.lost:
            seg.lost = False
            self.lost_count -= 1
        seg.transmissions += 1
        seg.sent_at = now
        if not seg.in_flight:
            seg.in_flight = True
            self.pipe += seg.end - seg.start

    def next_lost(self) -> SentSegment | None:
        """The oldest segment marked lost and not yet retransmitted since."""
        if not self.lost_count:
            return None
        segments = self._segments
        for index in range(max(self._head, self._lost_from), len(segments)):
            if segments[index].lost:
                self._lost_from = index
                return segments[index]
        self._lost_from = len(segments)
        return None

    def unacked(self) -> list[SentSegment]:
        return self._segments[self._head:]

    def clear(self) -> list[SentSegment]:
        segments = self._segments[self._head:]
        self._segments = []
        self._head = 0
        self._hint = 0
        self._lost_from = 0
        self._hint_sacked_bytes = 0
        self._hint_sacked_count = 0
        self._sack_seen.clear()
        self.pipe = 0
        self.sacked_bytes = 0
        self.sacked_count = 0
        self.lost_count = 0
        return segments


def _start_of(segment: SentSegment) -> int:
    return segment.start
