"""The integrity oracle: what the receiving application got, judged against what the boxes did.

Two reference streams: the ORIGINAL one (the sender's payload, a pure function of the payload
seed) and the BOX-EDITED one (the original with every logged payload edit applied: what a plain
TCP connection through the same boxes delivers, RFC 8684 §3.7's outcome after MP_FAIL and the
infinite mapping). The receiver's bytes (kept in a file by the receiving endpoint, read in
chunks, so streams of hundreds of MB cost no memory) are compared with both:

- ``ok``: exactly the original stream, complete;
- ``alg-edited``: exactly the box-edited stream, complete (there was at least one edit);
- ``truncated``: a proper prefix of one of them (then a stall, reset or timeout: the outcome
  axis says which);
- ``corrupted``: anything else, with where it starts and what is there instead, found by
  searching the reference for the received bytes at that point (a repeat, a gap, foreign bytes).
- ``unknown``: the oracle lacks what it needs (no payload seed, no received bytes and no hash
  to decide, an edit log that overflowed or does not match the sent stream); it says which.

A `Verdict` is plain data (`as_json`) so result.json, matrix cells and findings can cite it.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from testbed.endpoints.payload import PayloadSource

INTEGRITY_CLASSES = ("ok", "alg-edited", "truncated", "corrupted", "unknown")
READ_CHUNK = 1 << 20
WINDOW = 64  # bytes of the received stream searched for in the reference at a difference
PREVIEW = 16  # bytes shown in hex in a description


class Stream(Protocol):
    """A byte stream read by offset (a reference stream or the received bytes)."""

    length: int

    def read(self, offset: int, size: int) -> bytes: ...


class OriginalStream:
    """The sender's payload: `length` bytes of the stream for `seed`."""

    def __init__(self, seed: int, length: int) -> None:
        self.length = length
        self._source = PayloadSource(seed)

    def read(self, offset: int, size: int) -> bytes:
        end = min(self.length, offset + size)
        pieces = []
        while offset < end:
            piece = self._source.window(offset, end - offset)
            pieces.append(bytes(piece))
            offset += len(piece)
        return b"".join(pieces)


class BytesStream:
    """A stream held in memory (tests, short streams)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    def read(self, offset: int, size: int) -> bytes:
        return self.data[offset:offset + size]


class FileStream:
    """The received bytes kept by the receiving endpoint."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.length = path.stat().st_size
        self._file = path.open("rb")

    def read(self, offset: int, size: int) -> bytes:
        self._file.seek(offset)
        return self._file.read(size)

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True)
class Edit:
    """One payload edit at `offset` of the original stream: `old` bytes became `new` bytes."""

    offset: int
    old: bytes
    new: bytes


class EditedStream:
    """The original stream with non-overlapping edits applied (lengths may change)."""

    def __init__(self, original: Stream, edits: Sequence[Edit]) -> None:
        self.original = original
        self.edits = sorted(edits, key=lambda e: e.offset)
        # pieces: (start in edited stream, start in original or -1, literal bytes or None, length)
        self._starts: list[int] = []
        self._pieces: list[tuple[int, bytes | None, int]] = []
        position = cursor = 0
        for edit in self.edits:
            if edit.offset < cursor:
                raise ValueError(f"edits overlap at offset {edit.offset}")
            self._add(position, cursor, None, edit.offset - cursor)
            position += edit.offset - cursor
            self._add(position, -1, edit.new, len(edit.new))
            position += len(edit.new)
            cursor = edit.offset + len(edit.old)
        tail = max(original.length - cursor, 0)
        self._add(position, cursor, None, tail)
        self.length = position + tail

    def _add(self, start: int, origin: int, literal: bytes | None, length: int) -> None:
        if length > 0:
            self._starts.append(start)
            self._pieces.append((origin, literal, length))

    def read(self, offset: int, size: int) -> bytes:
        out = []
        end = min(self.length, offset + size)
        index = max(bisect.bisect_right(self._starts, offset) - 1, 0)
        while offset < end and index < len(self._pieces):
            start = self._starts[index]
            origin, literal, length = self._pieces[index]
            inner = offset - start
            take = min(length - inner, end - offset)
            if take > 0:
                out.append(literal[inner:inner + take] if literal is not None
                           else self.original.read(origin + inner, take))
                offset += take
            index += 1
        return b"".join(out)


def chunks(stream: Stream, start: int = 0, size: int = READ_CHUNK) -> Iterator[tuple[int, bytes]]:
    offset = start
    while offset < stream.length:
        data = stream.read(offset, size)
        if not data:
            return
        yield offset, data
        offset += len(data)


def common_prefix(a: Stream, b: Stream) -> int:
    """Length of the longest common prefix of two streams, read a chunk at a time."""
    limit = min(a.length, b.length)
    for offset, data in chunks(a):
        if offset >= limit:
            break
        other = b.read(offset, len(data))
        if data != other:
            size = min(len(data), len(other))
            low = 0
            while low < size and data[low] == other[low]:
                low += 1
            return min(offset + low, limit)
    return limit


def find_in(stream: Stream, needle: bytes, start: int = 0) -> int:
    """First offset >= start where `needle` occurs in `stream`, or -1 (chunked, overlapping)."""
    if not needle:
        return start
    overlap = len(needle) - 1
    offset = start
    while offset < stream.length:
        data = stream.read(offset, READ_CHUNK + overlap)
        found = data.find(needle)
        if found >= 0:
            return offset + found
        if len(data) <= overlap:
            return -1
        offset += len(data) - overlap
    return -1


def find_all(stream: Stream, needle: bytes, start: int = 0, limit: int = 4096) -> list[int]:
    """Every offset >= start where `needle` occurs (at most `limit`)."""
    found: list[int] = []
    while len(found) < limit:
        hit = find_in(stream, needle, start)
        if hit < 0:
            break
        found.append(hit)
        start = hit + 1
    return found


def best_match(reference: Stream, received: Stream, at: int, window: bytes) -> int:
    """Where in `reference` the received bytes at `at` come from, or -1.

    The payload repeats its body in every 1 MiB chunk (only a 32-byte tag differs), so a
    window occurs once per chunk; the true source is the one the received bytes follow longest
    (up to two chunks, which always crosses a tag), nearest to `at` on a tie.
    """
    candidates = find_all(reference, window)
    if not candidates:
        return -1
    return max(candidates, key=lambda c: (run_length(received, at, reference, c, 2 * READ_CHUNK),
                                          -abs(c - at)))


def run_length(a: Stream, a_start: int, b: Stream, b_start: int, cap: int | None = None) -> int:
    """How many bytes from a_start in `a` equal those from b_start in `b` (at most `cap`)."""
    total = 0
    while cap is None or total < cap:
        x = a.read(a_start + total, READ_CHUNK)
        y = b.read(b_start + total, len(x))
        if not x or not y:
            return total
        if x[:len(y)] != y:
            size = min(len(x), len(y))
            k = 0
            while k < size and x[k] == y[k]:
                k += 1
            return total + k
        total += len(y)
        if len(y) < len(x):
            return total
    return total


@dataclass
class Verdict:
    """The oracle's answer: a class, the reference it was judged against, and why."""

    integrity: str
    reference: str | None = None  # "original" or "box-edited" (the stream the bytes follow)
    received_bytes: int = 0
    original_bytes: int = 0
    edited_bytes: int | None = None
    edits: int = 0
    first_difference: int | None = None  # received offset where the bytes stop following it
    description: str = ""
    evidence: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _hex(data: bytes) -> str:
    return data[:PREVIEW].hex(" ") + (" …" if len(data) > PREVIEW else "")


def _n(value: int) -> str:
    return f"{value:,}"


def describe_difference(received: Stream, reference: Stream, at: int, name: str) -> str:
    """What the receiver has at `at` instead of the reference's bytes, found by searching."""
    if at >= reference.length:
        extra = received.length - reference.length
        window = received.read(at, WINDOW)
        found = best_match(reference, received, at, window)
        source = (f": bytes {_n(found)}.. of the stream again" if found >= 0
                  else f", not in the stream ({_hex(window)})")
        return (f"the receiver got all {_n(reference.length)} bytes of the {name} stream and "
                f"then {_n(extra)} more{source}")
    window = received.read(at, WINDOW)
    expected = reference.read(at, WINDOW)
    for k in range(1, WINDOW):  # replaced in place: the streams agree again a few bytes later
        again = received.read(at + k, WINDOW)
        if again and again == reference.read(at + k, len(again)):
            return (f"bytes {_n(at)}..{_n(at + k - 1)} differ: the receiver has {_hex(window[:k])} "
                    f"where the {name} stream has {_hex(expected[:k])}, then it follows the "
                    "stream again")
    found = best_match(reference, received, at, window)
    if found >= 0 and found < at:
        length = run_length(received, at, reference, found)
        return (f"from byte {_n(at)} the receiver has bytes {_n(found)}.. again: a repeat of "
                f"{_n(at - found)} bytes ({_n(length)} bytes follow the stream from there)")
    if found > at:
        later = _displaced(received, reference, expected, at, found - at)
        where = (f"; they arrive later, at received byte {_n(later)}: out of order" if later >= 0
                 else "; they never arrive: missing")
        return (f"from byte {_n(at)} the receiver skips {_n(found - at)} bytes and continues "
                f"with bytes {_n(found)}..{where}")
    nearby_start = max(at - READ_CHUNK, 0)
    nearby = reference.read(nearby_start, 2 * READ_CHUNK)
    for k in range(1, WINDOW):  # foreign bytes, then the stream resumes (an insertion)
        resume = received.read(at + k, WINDOW)
        hit = nearby.find(resume) if len(resume) == WINDOW else -1
        if hit >= 0:
            return (f"from byte {_n(at)} the receiver has {k} byte(s) not in the {name} stream "
                    f"({_hex(window[:k])} where it has {_hex(expected[:k])}), then continues with "
                    f"bytes {_n(nearby_start + hit)}..")
    return (f"from byte {_n(at)} the receiver has bytes that are nowhere in the {name} stream "
            f"({_hex(window)}; expected {_hex(expected)})")


def _displaced(received: Stream, reference: Stream, skipped: bytes, at: int, shift: int) -> int:
    """Where the skipped bytes turn up later in the received stream, or -1: an occurrence that
    is just the shifted stream going on (the payload's chunks repeat) does not count."""
    for q in find_all(received, skipped, at + 1):
        if received.read(q, len(skipped)) == reference.read(q + shift, len(skipped)):
            continue
        # the payload's chunks share one body: the bytes at q may as well be the same place of
        # another chunk, the stream simply going on; only a source of `at` itself counts
        if best_match(reference, received, q, received.read(q, WINDOW)) == at:
            return q
    return -1


def judge(received: Stream, original: Stream, edits: Sequence[Edit] = ()) -> Verdict:
    """Compare the received bytes with the original and the box-edited streams."""
    edited: Stream = EditedStream(original, edits) if edits else original
    verdict = Verdict("corrupted", received_bytes=received.length, original_bytes=original.length,
                      edited_bytes=edited.length if edits else None, edits=len(edits))
    candidates = [("original", original)] + ([("box-edited", edited)] if edits else [])
    best_name, best, best_prefix = "original", original, -1
    for name, stream in candidates:
        prefix = common_prefix(received, stream)
        if prefix == received.length == stream.length:
            verdict.integrity = "ok" if name == "original" else "alg-edited"
            verdict.reference = name
            verdict.description = (f"the receiver got exactly the {name} stream "
                                   f"({_n(received.length)} bytes)")
            if name == "box-edited":
                verdict.description += (f", as plain TCP through the same boxes would deliver "
                                        f"({len(edits)} edit(s) logged)")
            return verdict
        if prefix > best_prefix:
            best_name, best, best_prefix = name, stream, prefix
    verdict.reference = best_name
    if best_prefix == received.length:  # a proper prefix of the closest reference
        verdict.integrity = "truncated"
        verdict.description = (f"the receiver got the first {_n(received.length)} of "
                               f"{_n(best.length)} bytes of the {best_name} stream, nothing wrong")
        if edits and best_name == "original":
            verdict.description += (f" (the first edit, at byte {_n(min(e.offset for e in edits))}, "
                                    "was not reached)" if received.length <= min(e.offset for e in edits)
                                    else "")
        return verdict
    verdict.first_difference = best_prefix
    verdict.description = describe_difference(received, best, best_prefix, best_name)
    return verdict


def judge_by_hash(received_bytes: int, received_sha256: str, original: Stream,
                  edits: Sequence[Edit] = ()) -> Verdict:
    """The verdict when only the receiver's byte count and SHA-256 are known (no kept bytes):
    the class is exact, but a corruption cannot be located."""
    edited: Stream = EditedStream(original, edits) if edits else original
    candidates = [("original", original)] + ([("box-edited", edited)] if edits else [])
    for name, stream in candidates:
        if received_bytes > stream.length:
            continue
        digest = hashlib.sha256()
        for _offset, data in chunks(stream):
            take = min(len(data), received_bytes - _offset)
            if take <= 0:
                break
            digest.update(data[:take])
        if digest.hexdigest() == received_sha256:
            complete = received_bytes == stream.length
            integrity = ("ok" if name == "original" else "alg-edited") if complete else "truncated"
            return Verdict(integrity, name, received_bytes, original.length,
                           edited.length if edits else None, len(edits),
                           description=f"SHA-256 of the receiver's {_n(received_bytes)} bytes equals "
                                       f"that of the {name} stream's first {_n(received_bytes)} "
                                       "(received bytes not kept: judged by hash)")
    return Verdict("corrupted", None, received_bytes, original.length,
                   edited.length if edits else None, len(edits),
                   description=f"the receiver's {_n(received_bytes)} bytes are no prefix of the "
                               "original or the box-edited stream (judged by hash; received bytes "
                               "not kept, so the place is unknown)")
