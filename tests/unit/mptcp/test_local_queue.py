"""The host's own queue as a sender limit (TCP Small Queues' rule), in the simulated pair.

A driver tells the host how many more full-sized frames each local address may put in its
interface's queues (`MptcpHost.local_queue_room`); the stack's subflows send no more than that,
and a congestion window the local queue kept unused does not grow. Here the test plays the
driver, refilling the room by hand.
"""

from __future__ import annotations

import random

import pytest

from testbed.mptcp.config import StackConfig

from .harness import Pair

CLIENT = "10.0.0.1"


def _open(pair: Pair):
    client = pair.connect()
    pair.run_until(lambda: "ConnectionAccepted" in pair.event_types("server"), 2.0)
    return client, pair.server_connection()


def _data_packets_sent(pair: Pair) -> int:
    return sum(1 for _, direction, packet in pair.sent if direction == "c2s" and packet.tcp.payload)


def test_a_subflow_sends_no_more_frames_than_the_local_queue_has_room_for() -> None:
    pair = Pair(client_config=StackConfig(path_manager="none"))
    client, server = _open(pair)
    data = random.Random(3).randbytes(300_000)
    pair.client.local_queue_room[CLIENT] = 3
    client.send(data)
    pair.collect()
    assert _data_packets_sent(pair) == 3  # the initial window (10 frames) had room for 10
    assert pair.client.local_queue_room[CLIENT] == 0
    pair.run(0.2)  # the three are acknowledged; nothing refilled the room
    assert _data_packets_sent(pair) == 3
    pair.client.local_queue_room[CLIENT] = 10_000  # the queue drained: the rest goes
    got = bytearray()
    pair.run_until(lambda: got.extend(server.receive()) or len(got) >= len(data), 10.0)
    assert bytes(got) == data


def _cwnd_after(pair: Pair, room: int | None) -> tuple[int, int, int]:
    """Move 400 kB with the local room refilled to `room` frames before every step (None: no
    limit). The congestion window then, the one it started with, and the highest flight (in
    flight before the ACK) at which an ACK grew it."""
    client, server = _open(pair)
    subflow = client.live_subflows[0].tcp
    initial = subflow.cc.cwnd
    grown_at = [0]
    grow = subflow.cc.on_packet_acked

    def recording_growth(**ack) -> None:
        grown_at[0] = max(grown_at[0], subflow.scoreboard.pipe + ack["acked_bytes"])
        grow(**ack)

    subflow.cc.on_packet_acked = recording_growth  # type: ignore[method-assign]
    data = random.Random(5).randbytes(400_000)
    client.send(data)
    got = bytearray()

    def refill_and_check() -> bool:
        if room is not None:
            pair.client.local_queue_room[CLIENT] = room
        got.extend(server.receive())
        return len(got) >= len(data)

    pair.run_until(refill_and_check, 30.0)
    assert bytes(got) == data
    return subflow.cc.cwnd, initial, grown_at[0]


@pytest.mark.python_core  # wraps a method of the controller
def test_a_window_the_local_queue_keeps_unused_grows_to_twice_the_flight_at_most() -> None:
    config = StackConfig(path_manager="none")
    free, initial, _ = _cwnd_after(Pair(client_config=config), room=None)
    assert free > 4 * initial  # without the limit this transfer grows it (slow start)
    roomy, _, _ = _cwnd_after(Pair(client_config=config), room=10_000)
    assert roomy == free  # room that never binds changes nothing
    for room in (1, 2, 3):
        throttled, _, flight = _cwnd_after(Pair(client_config=config), room=room)
        # the last growth was allowed at a flight of at least half the window it grew
        assert throttled <= max(initial, 2 * flight + 2 * config.mss), (room, throttled, flight)
        assert throttled < free / 4


def test_without_the_limit_a_throttled_subflow_is_no_longer_held() -> None:
    pair = Pair(client_config=StackConfig(path_manager="none"))
    client, _ = _open(pair)
    subflow = client.live_subflows[0].tcp
    pair.client.local_queue_room[CLIENT] = 1
    client.send(random.Random(7).randbytes(100_000))
    pair.collect()
    assert subflow.locally_throttled and subflow.local_quota == 0
    pair.client.stop_local_queue_limit()  # the driver could not read the queue any more
    assert subflow.local_quota is None and not subflow.locally_throttled
    assert pair.client.local_queue_room == {}
