"""Deterministic payload bytes and the digest both ends compute over the byte stream.

The stream for a seed is cut into 1 MiB chunks. Every chunk is one body, drawn once from
``random.Random(seed).randbytes``, whose first 32 bytes are replaced by
SHA-256(domain ‖ seed ‖ chunk index). The tag makes every chunk distinct, so a middlebox
that duplicates, drops or reorders data across chunk boundaries changes the digest, while
producing a chunk costs one 32-byte write instead of generating a megabyte.

The receiver never needs the seed: it hashes what arrives, and the report compares the
digests and byte counts of both ends. ``expected_digest`` exists for tests.
"""

from __future__ import annotations

import hashlib
import random

CHUNK_SIZE = 1 << 20
_TAG_SIZE = 32
_TAG_DOMAIN = b"mptcp-testbed payload v1"
SEED_MAX = (1 << 64) - 1


def _check_seed(seed: int) -> None:
    if not 0 <= seed <= SEED_MAX:
        raise ValueError(f"payload seed must be in 0..2**64-1, got {seed}")


class PayloadSource:
    """The byte stream for one seed, handed out a chunk at a time without copying."""

    def __init__(self, seed: int, chunk_size: int = CHUNK_SIZE) -> None:
        _check_seed(seed)
        if chunk_size <= _TAG_SIZE:
            raise ValueError(f"chunk_size must exceed {_TAG_SIZE} bytes, got {chunk_size}")
        self.seed = seed
        self.chunk_size = chunk_size
        self._seed_bytes = seed.to_bytes(8, "big")
        self._buffer = bytearray(random.Random(seed).randbytes(chunk_size))
        self._view = memoryview(self._buffer)
        self._current: int | None = None

    def chunk(self, index: int) -> memoryview:
        """Chunk ``index`` of the stream; the view is only valid until the next call."""
        if index < 0:
            raise ValueError(f"chunk index must be >= 0, got {index}")
        if index != self._current:
            tag = hashlib.sha256(_TAG_DOMAIN + self._seed_bytes + index.to_bytes(8, "big"))
            self._buffer[:_TAG_SIZE] = tag.digest()
            self._current = index
        return self._view

    def window(self, offset: int, limit: int) -> memoryview:
        """Up to ``limit`` bytes of the stream starting at byte ``offset``, within one chunk."""
        index, start = divmod(offset, self.chunk_size)
        end = min(self.chunk_size, start + limit)
        return self.chunk(index)[start:end]


class StreamDigest:
    """SHA-256 and byte count of exactly the bytes passed in, in order."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.byte_count = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._hash.update(data)
        self.byte_count += len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def expected_digest(seed: int, byte_count: int, chunk_size: int = CHUNK_SIZE) -> str:
    """SHA-256 of the first ``byte_count`` bytes of the stream for ``seed``."""
    if byte_count < 0:
        raise ValueError(f"byte_count must be >= 0, got {byte_count}")
    source = PayloadSource(seed, chunk_size)
    digest = StreamDigest()
    offset = 0
    while offset < byte_count:
        piece = source.window(offset, byte_count - offset)
        digest.update(piece)
        offset += len(piece)
    return digest.hexdigest()
