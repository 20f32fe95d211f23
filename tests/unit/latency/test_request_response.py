"""Request/response traffic without a network namespace: the wire request, the percentiles,
the kernel endpoint's blocking exchange over loopback TCP, and the python stack's exchange
state machine between two in-memory connections."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from testbed.endpoints.payload import expected_digest
from testbed.endpoints.request_response import (
    LatencyLog,
    RequestPlan,
    StackExchange,
    client_exchange,
    latency_summary,
    message_sizes,
    payload_seed,
    percentile,
    response_seed,
    server_exchange,
)
from testbed.endpoints.transfer import IoPolicy, ProtocolError, StreamProgress, TransferRequest


def test_the_request_carries_both_sizes_and_decodes_back() -> None:
    plan = RequestPlan(requests=7, request_bytes=300, response_bytes=70_000, rate_per_s=10)
    request = TransferRequest.decode(plan.transfer_request(seed=42).encode())
    assert request.mode == "requests" and request.direction == "download"
    assert message_sizes(request) == (300, 70_000)
    assert plan.start_offset(3) == pytest.approx(0.3)
    assert RequestPlan(1, 1, 1).start_offset(5) == 0.0  # back to back
    # the responses are their own stream, and the one the oracle judges
    assert response_seed(42) != 42 and payload_seed(request) == response_seed(42)
    assert payload_seed(TransferRequest("upload", "bytes", 10, 42)) == 42


def test_a_request_with_an_empty_message_size_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="sizes must be >= 1"):
        message_sizes(TransferRequest("download", "requests", 5 << 32, 1))
    with pytest.raises(ValueError, match="request_bytes"):
        RequestPlan(1, 0, 10)


def test_percentiles_are_measured_values_by_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0 and percentile(values, 99) == 99.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0 and percentile([5.0], 99) == 5.0
    summary = latency_summary([10.0, 20.0, 30.0, 400.0])
    assert summary == {"count": 4, "p50_ms": 20.0, "p90_ms": 400.0, "p99_ms": 400.0,
                       "max_ms": 400.0, "mean_ms": 115.0}
    assert latency_summary([])["p99_ms"] is None


def _policy() -> IoPolicy:
    return IoPolicy(io_timeout=5.0, clock=time.monotonic, stop_reason=lambda: None, poll_slice=0.05)


def test_the_blocking_exchange_times_every_request_and_hashes_both_streams() -> None:
    plan = RequestPlan(requests=20, request_bytes=150, response_bytes=9000, rate_per_s=200)
    listener = socket.create_server(("127.0.0.1", 0))
    served: dict[str, StreamProgress] = {"requests": StreamProgress(), "responses": StreamProgress()}

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            request = TransferRequest.decode(conn.recv(24, socket.MSG_WAITALL))
            server_exchange(conn, request, served["requests"], served["responses"], _policy(), time.sleep)

    thread = threading.Thread(target=serve)
    thread.start()
    sent, received, log = StreamProgress(), StreamProgress(), LatencyLog()
    with socket.create_connection(listener.getsockname()) as sock:
        sock.sendall(plan.transfer_request(seed=9).encode())
        started = time.monotonic()
        client_exchange(sock, plan, 9, sent, received, _policy(), time.sleep, log)
        elapsed = time.monotonic() - started
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b""  # the server closes after the last request
    thread.join(5)
    listener.close()
    assert len(log.latencies_ms) == 20 and all(0 < v < 1000 for v in log.latencies_ms)
    assert elapsed >= 19 / 200  # the rate paces the requests
    assert log.sent_at_s[0] == pytest.approx(0, abs=0.01) and log.sent_at_s[-1] >= 0.09
    assert sent.digest.hexdigest() == served["requests"].digest.hexdigest() == expected_digest(9, 3000)
    assert received.digest.hexdigest() == served["responses"].digest.hexdigest() \
        == expected_digest(response_seed(9), 180_000)


class _Pipe:
    """One direction of an in-memory connection with a bounded send buffer."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.queued = bytearray()

    def send_buffer_free(self) -> int:
        return self.room - len(self.queued)

    def send(self, data: memoryview) -> int:
        count = min(len(data), self.send_buffer_free())
        self.queued += data[:count]
        return count

    def take(self, limit: int) -> bytes:
        data = bytes(self.queued[:limit])
        del self.queued[:limit]
        return data


def test_the_stack_exchange_answers_requests_in_pieces_and_times_them() -> None:
    plan = RequestPlan(requests=5, request_bytes=100, response_bytes=2500, rate_per_s=10)
    request = plan.transfer_request(seed=3)
    up, down = _Pipe(room=64), _Pipe(room=1000)  # small buffers: messages go in pieces
    client = StackExchange(up, request, plan, StreamProgress(), StreamProgress(), now=0.0)
    server = StackExchange(down, request, None, StreamProgress(), StreamProgress(), now=0.0)
    now = 0.0
    while not client.all_answered and now < 10:
        client.advance(now)
        if piece := up.take(40):
            server.on_data(piece, now)
        server.advance(now)
        if piece := down.take(700):
            client.on_data(piece, now)
        assert client.error is None and server.error is None
        deadline = client.due()
        now = round(now + 0.01, 3) if deadline is None else max(round(now + 0.01, 3), deadline)
    assert client.all_answered and server.answered == 5 and server.idle
    assert client.log.sent_at_s == [0.0, 0.1, 0.2, 0.3, 0.4]  # paced at 10 per second
    assert all(0.02 <= v <= 0.1 for v in [ms / 1000 for ms in client.log.latencies_ms])
    assert client.sent.digest.hexdigest() == server.received.digest.hexdigest() == expected_digest(3, 500)
    assert client.received.digest.hexdigest() == expected_digest(response_seed(3), 12_500)


def test_response_bytes_nobody_asked_for_are_a_protocol_error() -> None:
    plan = RequestPlan(requests=2, request_bytes=10, response_bytes=20)
    client = StackExchange(_Pipe(100), plan.transfer_request(1), plan, StreamProgress(),
                           StreamProgress(), now=0.0)
    client.on_data(b"x" * 5, 0.0)
    assert client.error is not None and "beyond the answer" in client.error


def test_a_server_that_stops_answering_early_is_a_protocol_error_with_the_latencies_kept() -> None:
    plan = RequestPlan(requests=3, request_bytes=10, response_bytes=20)
    listener = socket.create_server(("127.0.0.1", 0))

    def answer_once() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(24 + 10, socket.MSG_WAITALL)
            conn.sendall(b"r" * 20)
            # a clean close: closing with the next request unread would send a reset instead
            # (which the client rightly reports as one), depending on whether it had arrived
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(4096):
                pass

    thread = threading.Thread(target=answer_once)
    thread.start()
    log = LatencyLog()
    with socket.create_connection(listener.getsockname()) as sock:
        sock.sendall(plan.transfer_request(seed=1).encode())
        with pytest.raises(ProtocolError, match="server closed after answering 1 of 3 requests"):
            client_exchange(sock, plan, 1, StreamProgress(), StreamProgress(), _policy(), time.sleep, log)
    thread.join(5)
    listener.close()
    assert len(log.latencies_ms) == 1
