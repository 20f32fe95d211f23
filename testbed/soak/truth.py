"""What really arrived, judged by hashes alone, to hold the testbed's printed verdict against.

The receiver's kept bytes are hashed and compared with the SHA-256 of the payload stream (the
seed's stream, as long as the sender says it sent): equal is `ok`; equal to the hash of the
stream's first N bytes, N the received length, and shorter than what was sent is `truncated`;
anything else is `corrupted`. No box of a soak edits payloads, so `alg-edited` is never true.
This shares nothing with the oracle (testbed.integrity) but the payload generator.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.endpoints.payload import PayloadSource

CHUNK = 1 << 20


@dataclass(frozen=True)
class Truth:
    integrity: str  # ok | truncated | corrupted
    received_bytes: int
    sent_bytes: int
    received_sha256: str
    payload_prefix_sha256: str  # the payload's first received_bytes bytes

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def payload_sha256(seed: int, length: int) -> str:
    source = PayloadSource(seed)
    digest = hashlib.sha256()
    offset = 0
    while offset < length:
        piece = source.window(offset, min(CHUNK, length - offset))
        digest.update(piece)
        offset += len(piece)
    return digest.hexdigest()


def file_sha256(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def judge_received(received: Path | None, payload_seed: int, sent_bytes: int) -> Truth:
    """The class of what arrived (a missing file: nothing arrived)."""
    size, digest = file_sha256(received) if received is not None and received.exists() \
        else (0, hashlib.sha256().hexdigest())
    prefix = payload_sha256(payload_seed, size)
    if digest != prefix:
        integrity = "corrupted"
    elif size == sent_bytes:
        integrity = "ok"
    else:
        integrity = "truncated" if size < sent_bytes else "corrupted"
    return Truth(integrity, size, sent_bytes, digest, prefix)
