"""Byte-stream reassembly over unbounded offsets (subflow offsets or 64-bit DSNs).

One class serves both levels: the subflow feeds it relative sequence offsets (already
unwrapped from 32 bits) and the connection feeds it DSNs.

Out-of-order bytes are stored as non-overlapping pieces that are never concatenated while
waiting (joining them would copy the buffer again on every arrival, which is quadratic when
a window of data arrives out of order, as it does across subflows). The merged byte ranges
are kept separately as integer intervals for SACK blocks, with the most recently touched
one remembered so it can be listed first (RFC 2018 section 4).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort


class Reassembly:
    __slots__ = ("_pieces", "_range_ends", "_range_starts", "_starts", "buffered", "next",
                 "recent_start")

    def __init__(self, start: int) -> None:
        self.next = start  # the next in-order offset expected
        self._starts: list[int] = []  # sorted starts of stored pieces
        self._pieces: dict[int, bytes] = {}
        self._range_starts: list[int] = []  # merged intervals of what is held
        self._range_ends: list[int] = []
        self.buffered = 0  # out-of-order bytes held
        self.recent_start: int | None = None

    def add(self, offset: int, data: bytes) -> bytes:
        """Insert a chunk; return the bytes that became in order (possibly empty)."""
        end = offset + len(data)
        if end <= self.next or not data:
            return b""
        if offset < self.next:
            data = data[self.next - offset:]
            offset = self.next
        if offset == self.next and (not self._starts or end < self._starts[0]):
            self.next = end  # in order, and not reaching anything held: nothing to join
            return data
        self._store(offset, data)
        if offset != self.next:
            return b""
        return self._drain()

    def _store(self, offset: int, data: bytes) -> None:
        """Keep the parts of [offset, end) not already held, as separate pieces."""
        end = offset + len(data)
        starts, pieces = self._starts, self._pieces
        range_ends = self._range_ends
        if not range_ends or offset >= range_ends[-1]:
            # at or beyond the end of everything held (the usual case: the next chunk of
            # the newest run, as subflows interleave): no overlap, append in order
            if range_ends and offset == range_ends[-1]:
                range_ends[-1] = end
                self.recent_start = self._range_starts[-1]
            else:
                self._range_starts.append(offset)
                range_ends.append(end)
                self.recent_start = offset
            starts.append(offset)
            pieces[offset] = data
            self.buffered += len(data)
            return
        self._add_range(offset, end)
        index = bisect_right(starts, offset) - 1
        if index >= 0:
            prev_end = starts[index] + len(pieces[starts[index]])
            if prev_end > offset:
                if prev_end >= end:
                    return
                data = data[prev_end - offset:]
                offset = prev_end
        index = bisect_left(starts, offset)
        while offset < end:
            if index < len(starts) and starts[index] < end:
                held_start = starts[index]
                if held_start > offset:
                    self._put(offset, data[:held_start - offset])
                    index += 1  # the new piece sits before the held one
                held_end = held_start + len(pieces[held_start])
                if held_end >= end:
                    return
                data = data[max(held_end - offset, 0):]
                offset = max(offset, held_end)
                index = bisect_left(starts, offset)
            else:
                self._put(offset, data)
                return

    def _put(self, offset: int, data: bytes) -> None:
        insort(self._starts, offset)
        self._pieces[offset] = data
        self.buffered += len(data)

    def _add_range(self, start: int, end: int) -> None:
        starts, ends = self._range_starts, self._range_ends
        first = bisect_left(ends, start)  # first interval ending at/after our start
        last = bisect_right(starts, end)  # intervals starting at/before our end
        if first < last:
            start = min(start, starts[first])
            end = max(end, ends[last - 1])
        starts[first:last] = [start]
        ends[first:last] = [end]
        self.recent_start = start

    def _drain(self) -> bytes:
        out: list[bytes] = []
        starts, pieces = self._starts, self._pieces
        taken = 0
        while taken < len(starts) and starts[taken] <= self.next:
            start = starts[taken]
            chunk = pieces.pop(start)
            taken += 1
            self.buffered -= len(chunk)
            chunk_end = start + len(chunk)
            if chunk_end > self.next:
                out.append(chunk[self.next - start:])
                self.next = chunk_end
        del starts[:taken]
        range_ends = self._range_ends
        cut = bisect_right(range_ends, self.next)
        if cut:
            del self._range_starts[:cut]
            del range_ends[:cut]
        if self._range_starts and self._range_starts[0] < self.next:
            self._range_starts[0] = self.next
        if self.recent_start is not None and self.recent_start < self.next:
            self.recent_start = None
        return b"".join(out)

    def ranges(self, limit: int = 4) -> list[tuple[int, int]]:
        """Up to `limit` out-of-order ranges (start, end-exclusive), the most recently
        changed first, then the others in sequence order."""
        starts, ends = self._range_starts, self._range_ends
        spans: list[tuple[int, int]] = []
        recent = self.recent_start
        if recent is not None:
            index = bisect_left(starts, recent)
            if index < len(starts) and starts[index] == recent:
                spans.append((recent, ends[index]))
        for index in range(len(starts)):
            if len(spans) >= limit:
                break
            if starts[index] != recent:
                spans.append((starts[index], ends[index]))
        return spans

    def highest(self) -> int:
        """The end of the furthest byte held (or `next` when nothing is out of order)."""
        return self._range_ends[-1] if self._range_ends else self.next
