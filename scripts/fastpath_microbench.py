"""Nanoseconds per packet of the raw-bytes fast paths, without namespaces or sockets.

    python scripts/fastpath_microbench.py [--repeat 7] [--number 20000]

What each line times (best of `--repeat`, per packet):

    coalesce.acks     driver.ack_coalesce.coalesce_pure_acks on a batch of 64 pure ACKs
                      (timestamps + DSS data ACK) of one flow: the bulk sender's receive batch
    coalesce.data     the same on 64 data segments: the bulk receiver's batch
    receive.filter    driver.packet_io.PacketIO.receive's filter (a fake socket hands it 64
                      data segments for the stack, 64 for another port)
    send_packet       PacketIO.send_packet of a data segment into a fake raw socket (the TCP
                      header and checksum included)
    strip.data        inline.fastpath.RawOptionStrip.process, the bench_rewrite `strip` box, on a
                      data frame (timestamps overwritten with NOPs)
    strip.ack         the same on a pure-ACK frame
    pipeline.strip    inline.pipeline.MiddleboxPipeline.process with that box (fast path)
    pipeline.decode   MiddleboxPipeline.process with a pass-through box (decode, keep bytes)
    sim.pcap          sim.pcap.PcapWriter.write of a data packet into memory

The machine is shared: compare figures of runs taken one after the other (run the old tree
with PYTHONPATH pointing at it), never across machines.
"""

from __future__ import annotations

import argparse
import io
import random
import socket
import sys
import time
import timeit
from collections.abc import Callable

from middleboxes.registry import build_middlebox
from testbed.inline.fastpath import RawOptionStrip
from testbed.inline.pipeline import MiddleboxPipeline, wire_codec
from testbed.mptcp.driver.ack_coalesce import coalesce_pure_acks
from testbed.mptcp.driver.packet_io import PacketIO, PortFilter

try:  # a tree from before issue 11 named the module middleboxes.base (tried first: with
    # PYTHONPATH pointing at such a tree, the editable install would still find .contract)
    from middleboxes.base import Direction, MiddleboxCounters  # type: ignore[import-not-found]
except ImportError:
    from middleboxes.contract import Direction, MiddleboxCounters
from testbed.wire import (
    ACK,
    PSH,
    Dss,
    NoOperation,
    Packet,
    TcpSegment,
    Timestamps,
    encode_packet,
)

ETHERNET = bytes.fromhex("020000000002020000000001") + b"\x08\x00"
BATCH = 64
NOP = NoOperation()  # Linux pads timestamps with two NOPs in front


def _packet(seq: int, ack: int, payload: bytes, options: list, dst_port: int = 5201) -> Packet:
    return Packet(src="10.99.0.1", dst="10.99.0.2", tcp=TcpSegment(
        src_port=40000, dst_port=dst_port, seq=seq, ack=ack, flags=ACK | (PSH if payload else 0),
        window=500, options=options, payload=payload))


def _data(seq: int, dst_port: int = 5201) -> Packet:
    return _packet(seq, 1, bytes(1448), [NOP, NOP, Timestamps(seq, 7)], dst_port)


def _pure_ack(ack: int) -> Packet:
    return _packet(1, ack, b"", [NOP, NOP, Timestamps(ack, 7), Dss(data_ack=ack * 3, data_ack_64=False)])


class _FakeReceiveSocket:
    def __init__(self, packets: list[bytes]) -> None:
        self.packets = packets
        self.index = 0

    def recv(self, _size: int) -> bytes:
        index = self.index
        if index == len(self.packets):
            self.index = 0
            raise BlockingIOError
        self.index = index + 1
        return self.packets[index]


class _FakeSendSocket:
    def sendmsg(self, *_args: object) -> int:
        return 0


class _PassThrough:
    name = "pass_through"

    def __init__(self) -> None:
        self.counters = MiddleboxCounters()

    def process(self, packet: Packet, direction: Direction, now: float) -> list[Packet]:
        return [packet]

    def next_deadline(self) -> float | None:
        return None

    def release(self, now: float) -> list:
        return []


def _packet_io(packets: list[bytes]) -> PacketIO:
    """A PacketIO with fake sockets (no namespace needed)."""
    io_ = PacketIO.__new__(PacketIO)
    io_.addresses = ["10.99.0.2"]
    io_._address_bytes = frozenset({socket.inet_aton("10.99.0.2")})
    io_.ports = PortFilter([(5201, 5201), (40000, 60000)])
    io_.rx = _FakeReceiveSocket(packets)  # type: ignore[assignment]
    io_.rx6, io_._address_bytes_v6, io_._packed6 = None, frozenset(), {}  # no IPv6 address
    io_.tx = {"10.99.0.1": _FakeSendSocket()}  # type: ignore[dict-item]
    io_._packed = {"10.99.0.1": socket.inet_aton("10.99.0.1"),
                   "10.99.0.2": socket.inet_aton("10.99.0.2")}
    io_.received = io_.ignored = io_.sent = 0
    io_.send_errors = {}
    return io_


def _pcap_write(data: bytes) -> Callable[[], object]:
    """One pcap record of `data` into memory, with the simulator's capture writer."""
    try:
        from testbed.sim.pcap import link_capture_writer
    except ImportError:  # a tree from before the simulator wrote through testbed.wire.pcap
        from testbed.sim.pcap import PcapWriter  # type: ignore[attr-defined]

        old = PcapWriter(io.BytesIO())
        return lambda: old.write(1.5, data)
    writer = link_capture_writer(io.BytesIO())
    return lambda: writer.write(data, 1.5)


def cases() -> dict[str, tuple[Callable[[], object], int]]:
    """name -> (callable, packets per call)."""
    acks = [encode_packet(_pure_ack(1000 + 1448 * i)) for i in range(BATCH)]
    data = [encode_packet(_data(1000 + 1448 * i)) for i in range(BATCH)]
    others = [encode_packet(_data(1000 + 1448 * i, dst_port=22)) for i in range(BATCH)]
    receiving = _packet_io(data + others)
    sending = _packet_io([])
    one_data = _data(5000)
    strip_box = build_middlebox("strip_options", {
        "what": ["timestamps"], "packets": ["data", "pure_ack", "fin"], "how": "nop",
        "direction": "both"}, random.Random(1))
    raw_strip = RawOptionStrip.for_chain([strip_box])
    assert raw_strip is not None
    data_frame = ETHERNET + data[0]
    assert raw_strip.process(data_frame, Direction.UPSTREAM) not in (None, data_frame)
    ack_frame = ETHERNET + acks[0]
    strip_pipeline = MiddleboxPipeline([strip_box], wire_codec())
    decode_pipeline = MiddleboxPipeline([_PassThrough()], wire_codec())  # type: ignore[list-item]
    up = Direction.UPSTREAM
    return {
        "coalesce.acks": (lambda: coalesce_pure_acks(acks), BATCH),
        "coalesce.data": (lambda: coalesce_pure_acks(data), BATCH),
        "receive.filter": (lambda: receiving.receive(4 * BATCH), 2 * BATCH),
        "send_packet": (lambda: sending.send_packet(one_data), 1),
        "strip.data": (lambda: raw_strip.process(data_frame, up), 1),
        "strip.ack": (lambda: raw_strip.process(ack_frame, up), 1),
        "pipeline.strip": (lambda: strip_pipeline.process(data_frame, up, 0.0), 1),
        "pipeline.decode": (lambda: decode_pipeline.process(data_frame, up, 0.0), 1),
        "sim.pcap": (_pcap_write(data[0]), 1),
    }


def measure(repeat: int = 7, number: int = 20000,
            timer: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """name -> nanoseconds per packet of each of `repeat` timings of about `number` packets
    (the benchmark gate, testbed.bench, reads these with the process's CPU clock as `timer`)."""
    return {name: [time_once(call, per_call, number, timer) for _ in range(repeat)]
            for name, (call, per_call) in cases().items()}


def time_once(call: Callable[[], object], per_call: int, number: int,
              timer: Callable[[], float] = time.perf_counter) -> float:
    """Nanoseconds per packet of one timing of about `number` packets through `call`."""
    calls = max(1, number // per_call)
    return timeit.Timer(call, timer=timer).timeit(number=calls) / (calls * per_call) * 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--number", type=int, default=20000, help="packets per timing")
    args = parser.parse_args(argv)
    for name, timings in measure(args.repeat, args.number).items():
        print(f"{name:16s} {min(timings):8.0f} ns/packet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
