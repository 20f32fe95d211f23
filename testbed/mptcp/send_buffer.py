"""The data-level send buffer, in fixed blocks that a sent segment can view instead of copy.

Why: every segment in flight must keep its payload until its subflow acknowledges it (a
subflow retransmits the same bytes, RFC 8684 3.3.6), and the data level keeps the same bytes
until the DATA_ACK covers them. With one bytearray and a copy per segment, the bytes in flight
were held twice: about 4 MB more for a full 4 MB send buffer. Here the bytes live in 128 KiB
bytearrays that are never resized; a segment's payload is a memoryview of its block (a copy only
where it straddles two blocks), and the block stays alive while either still needs it. 128 KiB,
not less: glibc serves that size with its own mmap (driver.memory fixes the threshold there),
so a freed block goes back to the system; 64 KiB blocks came from the heap and its
fragmentation held 2 MB more at 2 x 100 Mbit/s than the single bytearray did.

Bytes are written into a block only past everything written before, and a block is never
written again once it leaves the buffer, so a view never sees its bytes change.
"""

from __future__ import annotations

BLOCK_BITS = 17
BLOCK_SIZE = 1 << BLOCK_BITS
_BLOCK_MASK = BLOCK_SIZE - 1


class SendBuffer:
    """Bytes queued at the data level, addressed from the oldest byte still held (0)."""

    def __init__(self) -> None:
        # Blocks cover absolute stream positions [n * BLOCK_SIZE, (n + 1) * BLOCK_SIZE);
        # `_blocks[0]` is the block holding `_head` (drop releases every block before it).
        # `_head`/`_tail`: absolute positions of the first byte held and of the next to write.
        self._blocks: list[memoryview] = []
        self._head = 0
        self._tail = 0

    def __deepcopy__(self, memo: dict[int, object]) -> SendBuffer:
        """An independent buffer with the same bytes (memoryviews cannot be copied)."""
        copied = SendBuffer()
        copied._blocks = [memoryview(bytearray(block)) for block in self._blocks]
        copied._head, copied._tail = self._head, self._tail
        return copied

    def __len__(self) -> int:
        return self._tail - self._head

    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Queue `data` (copied into the blocks)."""
        view = memoryview(data).cast("B")
        written, total = 0, len(view)
        while written < total:
            offset = self._tail & _BLOCK_MASK
            index = (self._tail >> BLOCK_BITS) - (self._head >> BLOCK_BITS)
            if index == len(self._blocks):  # the tail is at the start of a block not yet made
                self._blocks.append(memoryview(bytearray(BLOCK_SIZE)))
            block = self._blocks[index]
            count = min(BLOCK_SIZE - offset, total - written)
            block[offset:offset + count] = view[written:written + count]
            written += count
            self._tail += count

    def drop(self, count: int) -> None:
        """Forget the `count` oldest bytes (acknowledged at the data level)."""
        if count < 0 or count > len(self):
            raise ValueError(f"cannot drop {count} bytes of a buffer holding {len(self)}")
        first_block = self._head >> BLOCK_BITS
        self._head += count
        done = (self._head >> BLOCK_BITS) - first_block  # blocks now wholly before the head
        if done > 0:
            del self._blocks[:done]

    def view(self, start: int, size: int) -> bytes | memoryview:
        """`size` bytes from position `start` (0 = the oldest byte held): a view of one block,
        or a new bytes object where the range straddles two or more."""
        if start < 0 or size < 0 or start + size > len(self):
            raise ValueError(f"bytes {start}..{start + size} are not in a buffer of {len(self)}")
        position = self._head + start
        index = (position >> BLOCK_BITS) - (self._head >> BLOCK_BITS)
        offset = position & _BLOCK_MASK
        if offset + size <= BLOCK_SIZE:
            return self._blocks[index][offset:offset + size]
        pieces = []
        while size > 0:
            count = min(BLOCK_SIZE - offset, size)
            pieces.append(self._blocks[index][offset:offset + count])
            size -= count
            index += 1
            offset = 0
        return b"".join(pieces)
