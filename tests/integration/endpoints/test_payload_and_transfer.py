"""Payload stream, request codec and the send/receive loops over a local socket pair."""

from __future__ import annotations

import hashlib
import random
import socket
import threading

import pytest

from testbed.endpoints.payload import PayloadSource, StreamDigest, expected_digest
from testbed.endpoints.transfer import (
    REQUEST,
    IdleTimeout,
    Interrupted,
    IoPolicy,
    ProtocolError,
    StreamProgress,
    TransferRequest,
    receive_stream,
    send_stream,
)


def _naive_stream(seed: int, size: int, chunk_size: int) -> bytes:
    """The documented construction, written out independently of PayloadSource."""
    body = random.Random(seed).randbytes(chunk_size)
    out = bytearray()
    index = 0
    while len(out) < size:
        tag = hashlib.sha256(
            b"mptcp-testbed payload v1" + seed.to_bytes(8, "big") + index.to_bytes(8, "big")
        ).digest()
        out += tag + body[32:]
        index += 1
    return bytes(out[:size])


def test_payload_matches_its_definition_across_chunk_boundaries() -> None:
    source = PayloadSource(5, chunk_size=100)
    pieces = bytearray()
    offset = 0
    while offset < 1000:
        piece = source.window(offset, 37)  # never crosses a chunk boundary
        pieces += piece
        offset += len(piece)
    assert bytes(pieces) == _naive_stream(5, 1000, 100)
    assert expected_digest(5, 1000, 100) == hashlib.sha256(_naive_stream(5, 1000, 100)).hexdigest()


def test_payload_chunks_differ_and_seeds_differ() -> None:
    source = PayloadSource(1, chunk_size=64)
    assert bytes(source.chunk(0)) != bytes(source.chunk(1))
    assert expected_digest(1, 4096) != expected_digest(2, 4096)
    assert expected_digest(1, 4096) == expected_digest(1, 4096)


def test_payload_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"seed must be in 0\.\.2\*\*64-1"):
        PayloadSource(-1)
    with pytest.raises(ValueError, match="chunk_size must exceed 32"):
        PayloadSource(1, chunk_size=32)


def test_request_round_trip_and_errors() -> None:
    request = TransferRequest("download", "seconds", 1_500_000, 2**64 - 1)
    raw = request.encode()
    assert len(raw) == REQUEST.size == 24
    assert TransferRequest.decode(raw) == request
    assert request.seconds == 1.5 and request.byte_limit is None
    with pytest.raises(ProtocolError, match="not a testbed endpoint client"):
        TransferRequest.decode(b"GET / HTTP/1.1\r\nHost: x\r\n"[:24])
    with pytest.raises(ProtocolError, match="version 9 unsupported"):
        TransferRequest.decode(raw[:4] + b"\x09" + raw[5:])
    with pytest.raises(ValueError, match="direction must be one of"):
        TransferRequest("sideways", "bytes", 1, 1)  # type: ignore[arg-type]


class StepClock:
    """A clock that advances a fixed step per reading (deterministic deadlines)."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def _policy(clock: StepClock, stop_reason: str | None = None, io_timeout: float = 10.0) -> IoPolicy:
    return IoPolicy(io_timeout=io_timeout, clock=clock, stop_reason=lambda: stop_reason, poll_slice=0.01)


def _receive_in_thread(sock: socket.socket) -> tuple[threading.Thread, StreamProgress]:
    progress = StreamProgress()
    policy = _policy(StepClock(0.001))
    thread = threading.Thread(target=receive_stream, args=(sock, progress, policy))
    thread.start()
    return thread, progress


def test_send_and_receive_exact_byte_count() -> None:
    sender, receiver = socket.socketpair()
    with sender, receiver:
        thread, received = _receive_in_thread(receiver)
        sent = StreamProgress()
        size = 3 * (1 << 20) + 12345
        send_stream(sender, PayloadSource(3), sent, size, None, _policy(StepClock(0.001)))
        sender.shutdown(socket.SHUT_WR)
        thread.join(10)
    assert sent.byte_count == received.byte_count == size
    assert sent.digest.hexdigest() == received.digest.hexdigest() == expected_digest(3, size)


def test_receiver_keeps_exactly_the_bytes_it_received(tmp_path) -> None:
    """--received-file: what the integrity oracle reads is byte for byte what was hashed."""
    kept = tmp_path / "received.bin"
    sender, receiver = socket.socketpair()
    with sender, receiver:
        progress = StreamProgress()
        progress.keep_received(kept)
        thread = threading.Thread(target=receive_stream,
                                  args=(receiver, progress, _policy(StepClock(0.001))))
        thread.start()
        size = 2 * (1 << 20) + 777
        send_stream(sender, PayloadSource(5), StreamProgress(), size, None, _policy(StepClock(0.001)))
        sender.shutdown(socket.SHUT_WR)
        thread.join(10)
        progress.close()
    data = kept.read_bytes()
    assert len(data) == progress.byte_count == size
    assert hashlib.sha256(data).hexdigest() == progress.digest.hexdigest() == expected_digest(5, size)


def test_send_stops_at_the_deadline_and_counts_exactly() -> None:
    sender, receiver = socket.socketpair()
    with sender, receiver:
        thread, received = _receive_in_thread(receiver)
        sent = StreamProgress()
        clock = StepClock(0.01)  # deadline 0.5 s of clock readings: a few dozen sends
        send_stream(sender, PayloadSource(4), sent, None, 0.5, _policy(clock))
        sender.shutdown(socket.SHUT_WR)
        thread.join(10)
    assert 0 < sent.byte_count == received.byte_count
    assert sent.digest.hexdigest() == expected_digest(4, sent.byte_count)


def test_stream_digest_counts() -> None:
    digest = StreamDigest()
    digest.update(b"abc")
    digest.update(memoryview(b"def"))
    assert digest.byte_count == 6 and digest.hexdigest() == hashlib.sha256(b"abcdef").hexdigest()


def test_stop_request_interrupts_and_keeps_the_count() -> None:
    sender, receiver = socket.socketpair()
    with sender, receiver:
        progress = StreamProgress()
        with pytest.raises(Interrupted, match="stopped by SIGTERM"):
            send_stream(
                sender, PayloadSource(1), progress, 10, None, _policy(StepClock(0.001), "stopped by SIGTERM")
            )
    assert progress.byte_count == 0


def test_receive_without_progress_times_out() -> None:
    sender, receiver = socket.socketpair()
    # Each clock reading advances 0.2 s, so the 1 s idle budget runs out in a few slices.
    with sender, receiver, pytest.raises(IdleTimeout, match="no data for 1 s after 0 bytes"):
        receive_stream(receiver, StreamProgress(), _policy(StepClock(0.2), io_timeout=1.0))
