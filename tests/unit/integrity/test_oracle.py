"""The integrity oracle on constructed streams: each case has exactly one right verdict."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from testbed.integrity import (
    BytesStream,
    Edit,
    EditedStream,
    FileStream,
    OriginalStream,
    judge,
    judge_by_hash,
)

SEED = 7
LENGTH = 3_000_000  # crosses the payload's 1 MiB chunks and the oracle's read chunks


@pytest.fixture(scope="module")
def sent() -> bytes:
    return OriginalStream(SEED, LENGTH).read(0, LENGTH)


def verdict_of(received: bytes, edits=()):
    return judge(BytesStream(received), OriginalStream(SEED, LENGTH), edits)


def test_intact_stream_is_ok(sent: bytes) -> None:
    verdict = verdict_of(sent)
    assert (verdict.integrity, verdict.reference, verdict.first_difference) == ("ok", "original", None)


def test_logged_edit_delivered_is_alg_edited(sent: bytes) -> None:
    at = 1_500_000
    edit = Edit(at, sent[at:at + 1], b"\x00" if sent[at] else b"\x01")
    received = sent[:at] + edit.new + sent[at + 1:]
    verdict = verdict_of(received, [edit])
    assert (verdict.integrity, verdict.reference) == ("alg-edited", "box-edited")


def test_growing_edit_delivered_is_alg_edited(sent: bytes) -> None:
    at = 1_048_570  # straddles a payload chunk boundary
    edit = Edit(at, sent[at:at + 1], b"BC")
    received = sent[:at] + b"BC" + sent[at + 1:]
    verdict = verdict_of(received, [edit])
    assert verdict.integrity == "alg-edited"
    assert verdict.edited_bytes == LENGTH + 1


def test_original_delivered_despite_logged_edit_is_ok(sent: bytes) -> None:
    """Several subflows: the failed data is retransmitted elsewhere, the original arrives."""
    edit = Edit(10, sent[10:11], b"Z")
    assert verdict_of(sent, [edit]).integrity == "ok"


def test_unlogged_edit_is_corrupted_at_its_offset(sent: bytes) -> None:
    at = 2_000_001
    received = bytearray(sent)
    received[at] ^= 0xFF
    verdict = verdict_of(bytes(received))
    assert (verdict.integrity, verdict.first_difference) == ("corrupted", at)
    assert "bytes 2,000,001..2,000,001 differ" in verdict.description


def test_truncated_prefix_of_original(sent: bytes) -> None:
    verdict = verdict_of(sent[:1_234_567])
    assert (verdict.integrity, verdict.reference) == ("truncated", "original")
    assert "first 1,234,567 of 3,000,000" in verdict.description


def test_truncated_prefix_of_edited_stream(sent: bytes) -> None:
    at = 500_000
    edit = Edit(at, sent[at:at + 3], b"xyz12")
    edited = sent[:at] + b"xyz12" + sent[at + 3:]
    verdict = verdict_of(edited[:900_000], [edit])
    assert (verdict.integrity, verdict.reference) == ("truncated", "box-edited")


def test_repeat_is_located_and_measured(sent: bytes) -> None:
    """The issue's example: from byte 1,448,000 the receiver has bytes 1,302,120.. again."""
    received = sent[:1_448_000] + sent[1_302_120:]
    verdict = verdict_of(received)
    assert (verdict.integrity, verdict.first_difference) == ("corrupted", 1_448_000)
    assert ("from byte 1,448,000 the receiver has bytes 1,302,120.. again: a repeat of 145,880 bytes"
            in verdict.description)


def test_appended_bytes(sent: bytes) -> None:
    received = sent + sent[2_900_000:2_950_000]
    verdict = verdict_of(received)
    assert (verdict.integrity, verdict.first_difference) == ("corrupted", LENGTH)
    assert "then 50,000 more: bytes 2,900,000.. of the stream again" in verdict.description


def test_missing_bytes(sent: bytes) -> None:
    received = sent[:700_000] + sent[760_000:]
    verdict = verdict_of(received)
    assert (verdict.integrity, verdict.first_difference) == ("corrupted", 700_000)
    assert "skips 60,000 bytes and continues with bytes 760,000..; they never arrive: missing" \
        in verdict.description


def test_missing_bytes_are_not_found_in_a_later_chunk_by_mistake(sent: bytes) -> None:
    """The payload's 1 MiB chunks share one body: the skipped bytes' content recurs 1 MiB later,
    where the stream (realigned by a later repeat) simply goes on. Still missing, not reordered."""
    received = sent[:700_000] + sent[701_424:900_000] + sent[898_576:900_000] + sent[900_000:]
    verdict = verdict_of(received)
    assert (verdict.integrity, verdict.first_difference) == ("corrupted", 700_000)
    assert "skips 1,424 bytes and continues with bytes 701,424..; they never arrive: missing" \
        in verdict.description


def test_reordered_bytes(sent: bytes) -> None:
    received = sent[:700_000] + sent[760_000:800_000] + sent[700_000:760_000] + sent[800_000:]
    verdict = verdict_of(received)
    assert (verdict.integrity, verdict.first_difference) == ("corrupted", 700_000)
    assert "they arrive later, at received byte 740,000: out of order" in verdict.description


def test_edit_at_another_offset_than_logged_is_corrupted(sent: bytes) -> None:
    """An edit the box did not make where it says it did is no ALG edit."""
    logged = Edit(100, sent[100:101], b"Q")
    received = sent[:101] + b"Q" + sent[102:]
    verdict = verdict_of(received, [logged])
    assert verdict.integrity == "corrupted"
    assert (verdict.reference, verdict.first_difference) == ("original", 101)


def test_repeat_after_an_alg_edit_is_judged_against_the_edited_stream(sent: bytes) -> None:
    """The reported offsets follow the box-edited stream once the edit was delivered (what
    mptcp_net-next #519 shows: reinjections appended to a stream already treated as TCP)."""
    edit = Edit(50, sent[50:51], b"BC")
    edited = sent[:50] + b"BC" + sent[51:]
    received = edited + edited[1_000_000:1_100_000]
    verdict = verdict_of(received, [edit])
    assert (verdict.integrity, verdict.reference, verdict.first_difference) == (
        "corrupted", "box-edited", LENGTH + 1)


def test_edited_stream_reads_across_pieces(sent: bytes) -> None:
    edits = [Edit(5, sent[5:7], b""), Edit(20, sent[20:21], b"LONGER")]
    edited = EditedStream(BytesStream(sent[:40]), edits)
    expected = sent[:5] + sent[7:20] + b"LONGER" + sent[21:40]
    assert edited.length == len(expected)
    assert b"".join(edited.read(i, 3) for i in range(0, edited.length, 3)) == expected


def test_file_stream_and_hash_verdicts_agree(tmp_path: Path, sent: bytes) -> None:
    path = tmp_path / "received.bin"
    path.write_bytes(sent[:2_000_000])
    stream = FileStream(path)
    try:
        assert judge(stream, OriginalStream(SEED, LENGTH)).integrity == "truncated"
    finally:
        stream.close()
    by_hash = judge_by_hash(2_000_000, hashlib.sha256(sent[:2_000_000]).hexdigest(),
                            OriginalStream(SEED, LENGTH))
    assert by_hash.integrity == "truncated"
    wrong = judge_by_hash(2_000_000, hashlib.sha256(b"x").hexdigest(), OriginalStream(SEED, LENGTH))
    assert wrong.integrity == "corrupted"
