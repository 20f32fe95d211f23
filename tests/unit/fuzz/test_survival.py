"""A bad packet never ends a packet loop (issue 13, point 2): the inline pipeline and the
stack's driver drop or pass it, count it by reason, and go on with the next one."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from middleboxes.contract import Direction, MiddleboxCounters
from testbed.inline.pipeline import MiddleboxPipeline, wire_codec
from testbed.mptcp.driver.loop import StackDriver
from testbed.wire import Packet, encode_packet
from tests.unit.inline.frames import tcp_frame, tcp_packet

UP = Direction.UPSTREAM


@dataclass
class Fragile:
    """A box with a bug: it raises on payload b"boom", and on release when asked to."""

    name: str = "fragile"
    counters: MiddleboxCounters = field(default_factory=MiddleboxCounters)
    held: list[Packet] = field(default_factory=list)

    def process(self, packet: Packet, direction: Direction, now: float) -> list[Packet]:
        if packet.tcp.payload == b"boom":
            raise KeyError("no such flow")
        if packet.tcp.payload == b"hold":
            self.held.append(packet)
            return []
        return [packet]

    def next_deadline(self) -> float | None:
        return 0.0 if self.held else None

    def release(self, now: float) -> list[tuple[Packet, Direction]]:
        raise ZeroDivisionError("release bug")


def test_a_box_that_raises_loses_that_packet_only() -> None:
    pipeline = MiddleboxPipeline([Fragile()], wire_codec())
    assert pipeline.process(tcp_frame(tcp_packet(b"boom")), UP, 0.0) == []
    good = tcp_frame(tcp_packet(b"fine"))
    assert pipeline.process(good, UP, 0.1) == [(good, UP)]
    assert pipeline.process(tcp_frame(tcp_packet(b"hold")), UP, 0.2) == []
    assert pipeline.release(0.3) == []  # the release raised: counted, the loop goes on
    stats = pipeline.stats.as_dict()
    assert stats["handler_errors"] == 2
    assert stats["reasons"] == {"handler:KeyError": 1, "handler:ZeroDivisionError": 1}
    assert stats["last_handler_error"].startswith("ZeroDivisionError")


def test_an_undecodable_frame_passes_unchanged_and_is_counted_by_field() -> None:
    pipeline = MiddleboxPipeline([Fragile()], wire_codec())
    frame = bytearray(tcp_frame(tcp_packet(b"x")))
    frame[14 + 20 + 12] = 0x30  # TCP data offset 3 words
    assert pipeline.process(bytes(frame), UP, 0.0) == [(bytes(frame), UP)]
    assert pipeline.stats.reasons == {"undecodable:tcp.data_offset": 1}


class ListIO:
    """A PacketIO that hands out a fixed list of raw packets, then nothing."""

    def __init__(self, packets: list[bytes]) -> None:
        self.pending = list(packets)
        self.sent: list[Packet] = []
        self.rx, self._peer = socket.socketpair()
        self.readable = [self.rx]
        self.tx: dict[str, socket.socket] = {}  # no raw send sockets: no local queue to read

    def receive(self, batch: int) -> list[bytes]:
        out, self.pending = self.pending[:batch], self.pending[batch:]
        return out

    def send_packet(self, packet: Packet) -> None:
        self.sent.append(packet)

    def stats(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        self.rx.close()
        self._peer.close()


class FragileHost:
    """An MptcpHost stand-in whose receive path raises on payload b"boom"."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self.received: list[bytes] = []

    def receive_packet(self, packet: Packet, now: float) -> None:
        if packet.tcp.payload == b"boom":
            raise AssertionError("stack bug")
        self.received.append(packet.tcp.payload)

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass

    def next_event(self) -> None:
        return None

    def packets_to_send(self, now: float) -> list[Packet]:
        return []

    def resets_pending(self) -> bool:
        return False


class OneStep:
    finished = False

    def on_event(self, event: object, now: float) -> None:
        pass

    def step(self, now: float) -> float | None:
        self.finished = True
        return None


def test_the_driver_drops_and_counts_what_does_not_decode_or_makes_the_host_raise() -> None:
    bad = bytearray(encode_packet(tcp_packet(b"x")))
    bad[20 + 12] = 0x30
    io = ListIO([bytes(bad), encode_packet(tcp_packet(b"boom")), encode_packet(tcp_packet(b"ok"))])
    host = FragileHost()
    driver = StackDriver(host, io, coalesce_acks=False)  # type: ignore[arg-type]
    try:
        driver.run(OneStep(), stop=lambda: False, linger_s=0.0)
    finally:
        io.close()
    assert host.received == [b"ok"]
    stats = driver.stats()
    assert stats["dropped"] == {"undecodable:tcp.data_offset": 1, "receive:AssertionError": 1}
    assert host.counters == {"DriverUndecodable": 1, "DriverReceiveError": 1}


def test_the_simulator_goes_on_when_a_box_raises() -> None:
    from testbed.net.params import LinkParams
    from testbed.sim.network import SimNetwork
    from tests.unit.sim.toy_endpoints import Burst, Sink, data_packet

    network = SimNetwork(1)
    outbox = [data_packet("10.0.0.1", "10.0.0.2", seq, 4) for seq in (1, 2, 3)]
    outbox[1].tcp.payload = b"boom"
    sender = network.add_endpoint("a", Burst(outbox))
    sink = Sink()
    network.add_link("ab", sender, network.add_endpoint("b", sink), LinkParams(delay_ms=1),
                     a_address="10.0.0.1", b_address="10.0.0.2", middleboxes=[Fragile()])
    network.run()
    assert [p.tcp.seq for _when, p in sink.received] == [1, 3]
    assert network.counters()["links"]["ab"]["middlebox_errors"] == {"handler:KeyError": 1}
