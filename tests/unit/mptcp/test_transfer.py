"""Data transfer over the TCP subflow engine: integrity, loss recovery, timers, windows, close."""

from __future__ import annotations

import hashlib
import itertools
import random

import pytest

from testbed.mptcp.config import StackConfig
from testbed.mptcp.connection import Connection
from testbed.mptcp.tcp_state import TcpState
from testbed.wire.types import ACK, FIN, RST, Packet, Sack

from .harness import Pair


def _open(pair: Pair, *, warm: bool = False) -> tuple[Connection, Connection]:
    """Connect; with warm=True also move one byte client->server (consumed), so the client
    sees a DSS from the server, becomes fully established and its path manager runs."""
    client = pair.connect()
    pair.run_until(lambda: "ConnectionAccepted" in pair.event_types("server"), 2.0)
    server = pair.server_connection()
    if warm:
        client.send(b"!")
        got = bytearray()
        pair.run_until(lambda: got.extend(server.receive()) or got == b"!", 2.0)
        pair.run(0.2)
    return client, server


def transfer(pair: Pair, sender: Connection, receiver: Connection, data: bytes,
             limit: float = 60.0) -> bytes:
    """Push `data` through, reading as it arrives; return what the receiver got."""
    pending = [data]
    got = bytearray()

    def done() -> bool:
        if pending[0]:
            taken = sender.send(pending[0])
            pending[0] = pending[0][taken:]
        got.extend(receiver.receive())
        return len(got) >= len(data)

    pair.run_until(done, limit)
    return bytes(got)


def _payload(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def test_bulk_transfer_both_directions_sha256() -> None:
    pair = Pair()
    client, server = _open(pair)
    up, down = _payload(400_000, 1), _payload(300_000, 2)
    client.send(up)
    server.send(down)
    got_up, got_down = bytearray(), bytearray()

    def done() -> bool:
        got_up.extend(server.receive())
        got_down.extend(client.receive())
        return len(got_up) == len(up) and len(got_down) == len(down)

    pair.run_until(done, 20.0)
    assert hashlib.sha256(got_up).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(got_down).digest() == hashlib.sha256(down).digest()
    assert client.stats()["outcome"] == "mptcp"


def test_sack_recovery_retransmits_hole_before_rto() -> None:
    dropped: list[int] = []

    def drop_one(packet: Packet, where: str) -> list[Packet]:
        if where == "c2s" and len(packet.tcp.payload) and not dropped and pair.now > 0.05:
            dropped.append(packet.tcp.seq)
            return []
        return [packet]

    pair = Pair(tamper=drop_one)
    client, server = _open(pair)
    data = _payload(150_000, 3)
    got = transfer(pair, client, server, data)
    assert got == data
    retransmissions = [t for t, d, p in pair.sent if d == "c2s" and p.tcp.seq == dropped[0]
                       and p.tcp.payload]
    assert len(retransmissions) == 2
    # fast retransmit: one RTT (20 ms) after the loss, well before the 200 ms RTO floor
    assert retransmissions[1] - retransmissions[0] < 0.05
    assert any(type(o) is Sack for _, d, p in pair.sent if d == "s2c" for o in p.tcp.options)
    subflow = client.live_subflows[0].tcp
    assert subflow.cc.ssthresh < float("inf")  # one loss episode halved the window


def test_rto_exponential_backoff_values() -> None:
    black_hole = [False]

    def drop_data(packet: Packet, where: str) -> list[Packet]:
        if black_hole[0] and where == "c2s" and packet.tcp.payload:
            return []
        return [packet]

    pair = Pair(tamper=drop_data, delay=0.05)
    client, _ = _open(pair)
    subflow = client.live_subflows[0].tcp
    rto0 = subflow.rtt.rto
    assert rto0 == pytest.approx(0.1 + 4 * 0.05)  # one sample of 100 ms RTT
    black_hole[0] = True
    start = pair.now
    client.send(b"z" * 100)
    pair.run(10.0)
    times = [t - start for t, d, p in pair.sent if d == "c2s" and p.tcp.payload]
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(times)]
    assert gaps[:5] == pytest.approx([rto0, 2 * rto0, 4 * rto0, 8 * rto0, 16 * rto0])
    assert subflow.rtt.backoff == 2 ** len(gaps)
    assert subflow.cc.cwnd == subflow.cc.mss  # RTO collapses the window to one segment


def test_delayed_ack_timing() -> None:
    pair = Pair()
    client, _ = _open(pair)
    pair.run(0.5)
    before = len(pair.sent)
    client.send(b"a" * 100)  # one small segment: the receiver delays its ACK by 40 ms
    pair.run(0.5)
    data_time = next(t for t, d, p in pair.sent[before:] if d == "c2s" and p.tcp.payload)
    ack_time = next(t for t, d, p in pair.sent[before:] if d == "s2c")
    assert ack_time - data_time == pytest.approx(0.010 + 0.040)  # one-way delay + ATO
    before = len(pair.sent)
    client.send(b"b" * 2 * 1448)  # two full segments: acknowledged at once
    pair.run(0.5)
    data_times = [t for t, d, p in pair.sent[before:] if d == "c2s" and p.tcp.payload]
    ack_times = [t for t, d, p in pair.sent[before:] if d == "s2c"]
    assert ack_times[0] == pytest.approx(data_times[-1] + 0.010)


def test_zero_window_then_window_update() -> None:
    config = StackConfig(recv_buffer=20_000)
    pair = Pair(server_config=config)
    client, server = _open(pair)
    data = _payload(60_000)
    client.send(data)
    pair.run(2.0)  # the server application does not read
    assert client.data.snd_data_nxt - client.data.snd_data_una <= 20_000
    zero = [p for _, d, p in pair.sent if d == "s2c" and p.tcp.window == 0]
    assert zero, "the receiver never advertised a zero window"
    stalled_at = client.data.snd_data_nxt
    pair.run(1.0)
    assert client.data.snd_data_nxt == stalled_at  # the sender respects the closed window
    got = bytearray(server.receive())
    pair.run_until(lambda: got.extend(server.receive()) or len(got) == len(data), 30.0)
    assert bytes(got) == data


def test_fin_and_time_wait() -> None:
    config = StackConfig(time_wait_s=5.0)
    pair = Pair(client_config=config, server_config=config)
    client, server = _open(pair)
    client.send(b"bye")
    client.close()
    pair.run(0.5)
    assert server.receive() == b"bye"
    assert "DataEndReceived" in pair.event_types("server")
    server.close()
    pair.run(0.5)
    assert "ConnectionClosed" in pair.event_types("client")
    assert "ConnectionClosed" in pair.event_types("server")
    client_subflow = client.created_subflows[0].tcp
    assert client_subflow.state is TcpState.TIME_WAIT
    # both ends close their subflow after the DATA_FIN exchange (a simultaneous close)
    assert server.created_subflows[0].tcp.state in (TcpState.TIME_WAIT, TcpState.CLOSED)
    fins = [p for _, _, p in pair.sent if p.tcp.flags & FIN]
    assert len(fins) == 2
    pair.run(5.0)
    assert client_subflow.state is TcpState.CLOSED
    assert server.created_subflows[0].tcp.state is TcpState.CLOSED
    assert pair.client.get_timer() is None and pair.server.get_timer() is None


def test_peer_rst_closes_connection() -> None:
    pair = Pair()
    client, server = _open(pair)
    server.reset_subflow(server.live_subflows[0], pair.now)
    pair.run(0.2)
    assert pair.events["client"][-1].reason == "reset"
    assert client.stats()["outcome"] == "reset"
    assert [p.tcp.flags for _, d, p in pair.sent if d == "s2c"][-1] == RST | ACK


def test_flow_control_respects_small_peer_window() -> None:
    pair = Pair(server_config=StackConfig(recv_buffer=8_000))
    client, server = _open(pair)
    data = _payload(200_000, 4)
    got = transfer(pair, client, server, data)
    assert got == data
    highest_outstanding = 0
    for _, d, p in pair.sent:
        if d == "c2s" and p.tcp.payload:
            highest_outstanding = max(highest_outstanding, len(p.tcp.payload))
    assert highest_outstanding <= 8_000


def test_lost_window_update_is_recovered_by_zero_window_probe() -> None:
    blocking = {"on": False}

    def drop_window_updates(packet: Packet, where: str) -> list[Packet]:
        if where == "s2c" and packet.tcp.window == 0:
            blocking["on"] = True
        elif where == "s2c" and blocking["on"] and not packet.tcp.payload:
            blocking["on"] = False  # the first window update after the zero window is lost
            return []
        return [packet]

    pair = Pair(server_config=StackConfig(recv_buffer=20_000), tamper=drop_window_updates)
    client, server = _open(pair)
    data = _payload(60_000)
    client.send(data)
    pair.run(1.0)
    got = bytearray(server.receive())
    pair.run_until(lambda: got.extend(server.receive()) or len(got) == len(data), 30.0)
    assert bytes(got) == data
    probes = 0
    sent_end = None  # the highest sequence number the client has sent so far
    for _, direction, packet in pair.sent:
        if direction != "c2s":
            continue
        end = packet.tcp.seq + len(packet.tcp.payload)
        if sent_end is not None and not packet.tcp.payload and end == sent_end - 1:
            probes += 1  # a pure ACK one below what was sent: a window probe
        sent_end = end if sent_end is None else max(sent_end, end)
    assert probes >= 1, "the sender never probed the closed window"


def test_after_a_timeout_the_backlog_goes_out_again_in_slow_start() -> None:
    """RFC 5681 3.1: after an RTO the window restarts at one segment and grows by slow start
    while the lost segments are resent. Held at one segment through the recovery, a backlog
    left by an outage (a subway station's wifi coming back) went out one per round trip."""
    outage = [False]
    delivered_after: list[float] = []

    def black_hole(packet: Packet, where: str) -> list[Packet]:
        if where == "c2s" and packet.tcp.payload:
            if outage[0]:
                return []
            if pair.now > 0.5:
                delivered_after.append(pair.now)
        return [packet]

    pair = Pair(tamper=black_hole)
    client, server = _open(pair)
    subflow = client.live_subflows[0].tcp
    data = [_payload(5_000_000, 4)]

    def pump() -> bool:
        data[0] = data[0][client.send(data[0]):]
        server.receive()
        return False

    pair.run(0.1, until=pump)  # the window is still opening: about 300 segments in flight
    outage[0] = True
    pair.run(0.5, until=pump)
    outstanding = (subflow.snd_nxt - subflow.snd_una) // subflow.mss
    assert outstanding >= 50 and subflow.recovering_from_rto
    outage[0] = False
    pair.run_until(lambda: pump() or not subflow.in_recovery, 30.0)
    # slow start doubles per 20-ms round trip: about log2(outstanding) of them, not `outstanding`
    recovery_s = pair.now - delivered_after[0]
    assert recovery_s < 12 * 2 * pair.delay, (outstanding, recovery_s)
    assert subflow.cc.cwnd > 16 * subflow.mss
