"""Byte-stream reassembly over unbounded offsets (subflow offsets or 64-bit DSNs).

One class serves both levels: the subflow feeds it relative sequence offsets (already
unwrapped from 32 bits) and the connection feeds it DSNs. Out-of-order chunks are kept as
non-overlapping (start, data) pieces in a sorted list; the most recently touched range is
remembered so SACK blocks can list it first (RFC 2018 section 4).
"""

from __future__ import annotations

from bisect import bisect_left


class Reassembly:
    __slots__ = ("_data", "_starts", "buffered", "next", "recent_start")

    def __init__(self, start: int) -> None:
        self.next = start  # the next in-order offset expected
        self._starts: list[int] = []
        self._data: list[bytes] = []
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
        if offset == self.next:
            if not self._starts:
                self.next = end
                return data
            out = [data]
            self.next = end
            self._drain_into(out)
            return b"".join(out)
        self._insert(offset, data)
        return b""

    def _drain_into(self, out: list[bytes]) -> None:
        while self._starts and self._starts[0] <= self.next:
            start = self._starts.pop(0)
            chunk = self._data.pop(0)
            self.buffered -= len(chunk)
            chunk_end = start + len(chunk)
            if chunk_end > self.next:
                out.append(chunk[self.next - start:])
                self.next = chunk_end
        if self.recent_start is not None and self.recent_start < self.next:
            self.recent_start = None

    def _insert(self, offset: int, data: bytes) -> None:
        """Store an out-of-order chunk, merging with overlapping/adjacent neighbours."""
        end = offset + len(data)
        index = bisect_left(self._starts, offset)
        # merge with the previous piece if it touches or overlaps
        if index > 0:
            prev_start = self._starts[index - 1]
            prev = self._data[index - 1]
            prev_end = prev_start + len(prev)
            if prev_end >= offset:
                if prev_end >= end:
                    self.recent_start = prev_start
                    return
                data = prev + data[prev_end - offset:]
                offset = prev_start
                index -= 1
                self.buffered -= len(prev)
                del self._starts[index]
                del self._data[index]
        # swallow following pieces that touch or overlap
        while index < len(self._starts) and self._starts[index] <= end:
            nxt_start = self._starts[index]
            nxt = self._data[index]
            nxt_end = nxt_start + len(nxt)
            if nxt_end > end:
                data = data + nxt[end - nxt_start:]
                end = nxt_end
            self.buffered -= len(nxt)
            del self._starts[index]
            del self._data[index]
        self._starts.insert(index, offset)
        self._data.insert(index, data)
        self.buffered += len(data)
        self.recent_start = offset

    def ranges(self, limit: int = 4) -> list[tuple[int, int]]:
        """Up to `limit` out-of-order ranges (start, end-exclusive), the most recently
        changed first, then the others in sequence order."""
        starts, data = self._starts, self._data
        spans: list[tuple[int, int]] = []
        recent = self.recent_start
        if recent is not None:
            index = bisect_left(starts, recent)
            if index < len(starts) and starts[index] == recent:
                spans.append((recent, recent + len(data[index])))
        for index in range(len(starts)):
            if len(spans) >= limit:
                break
            if starts[index] != recent:
                spans.append((starts[index], starts[index] + len(data[index])))
        return spans

    def highest(self) -> int:
        """The end of the furthest byte held (or `next` when nothing is out of order)."""
        if not self._starts:
            return self.next
        return self._starts[-1] + len(self._data[-1])
