"""The forwarding fast paths give exactly what the general path gives (pure, no namespaces).

* testbed.wire.encode_packet_reusing_payload (RFC 1624 checksum update, payload not re-summed)
  equals encode_packet after any header edit, and keeps a wrong received checksum wrong;
* testbed.inline.fastpath.RawOptionStrip (strip_options on raw bytes) yields the same frames
  and the same box counters as decoding, running the real StripOptions box and re-encoding,
  over random Linux-like packets and every kind of strip configuration;
* DelayLine.bypass only lets a frame skip an idle, delay-free line.
"""

from __future__ import annotations

import random

import pytest

from middleboxes.contract import Direction
from middleboxes.registry import build_middlebox
from testbed.inline.pipeline import FunctionCodec, MiddleboxPipeline, wire_codec
from testbed.net.delayline import DelayLine
from testbed.wire import (
    decode_packet,
    encode_packet,
    encode_packet_reusing_payload,
    verify_checksums,
)
from testbed.wire.tcp_options import encode_options, encoded_length
from testbed.wire.types import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    Dss,
    MaximumSegmentSize,
    MpCapable,
    MpJoinSyn,
    NoOperation,
    Packet,
    Sack,
    SackPermitted,
    TcpOption,
    TcpSegment,
    Timestamps,
    UnknownOption,
    WindowScale,
)

ETHERNET = bytes(range(12)) + b"\x08\x00"


def random_options(rng: random.Random) -> list[TcpOption]:
    """A Linux-like option list: NOP-aligned, at most 40 bytes, sometimes zero-padded (EOL)."""
    pool: list[TcpOption] = [
        Timestamps(rng.getrandbits(32), rng.getrandbits(32)),
        Sack(((rng.getrandbits(32), rng.getrandbits(32)),)),
        MaximumSegmentSize(1460), WindowScale(7), SackPermitted(),
        Dss(data_ack=rng.getrandbits(64), dsn=rng.getrandbits(64),
            subflow_seq=rng.getrandbits(32), data_len=rng.randrange(1, 1449)),
        Dss(data_ack=rng.getrandbits(64)),
        MpCapable(), MpCapable(sender_key=rng.getrandbits(64)),
        MpJoinSyn(False, 1, rng.getrandbits(32), rng.getrandbits(32)),
        UnknownOption(253, b"\x01\x02"),
    ]
    options: list[TcpOption] = []
    used = 0
    for option in rng.sample(pool, rng.randrange(0, 4)):
        length = encoded_length(option)
        padding = -length % 4 if rng.random() < 0.8 else 0
        if used + length + padding > 40:
            continue
        options += [NoOperation()] * padding + [option]
        used += length + padding
    if used % 4 and rng.random() < 0.7:
        options += [NoOperation()] * (-used % 4)  # else the encoder zero-pads: an EOL
    return options


def random_frame(rng: random.Random) -> bytes:
    flags = rng.choice([ACK, ACK | PSH, ACK | PSH, SYN, SYN | ACK, ACK | FIN, RST, ACK | RST])
    payload = rng.randbytes(rng.choice([0, 0, 1, 100, 1448])) if not flags & (SYN | RST) else b""
    segment = TcpSegment(rng.getrandbits(16), 5201, rng.getrandbits(32), rng.getrandbits(32),
                         flags, rng.getrandbits(16), random_options(rng), payload)
    return ETHERNET + encode_packet(Packet("10.0.1.1", "10.0.100.2", segment,
                                           ttl=rng.randrange(1, 256), ident=rng.getrandbits(16)))


def test_incremental_encode_equals_full_encode_and_keeps_bad_checksums_bad() -> None:
    rng = random.Random(11)
    for _ in range(1500):
        frame = random_frame(rng)
        packet = decode_packet(frame[14:])
        choice = rng.randrange(4)
        if choice == 0:
            packet.tcp.options = [NoOperation() if type(o) is Timestamps else o
                                  for o in packet.tcp.options]
        elif choice == 1:
            packet.tcp.options = [o for o in packet.tcp.options if type(o) is not Timestamps]
        elif choice == 2:
            packet.tcp.seq = (packet.tcp.seq + 99991) & 0xFFFFFFFF
            packet.tcp.window = 1
        else:
            packet.src, packet.tcp.src_port, packet.ttl = "10.0.1.200", 4242, 9
        if len(encode_options(packet.tcp.options)) > 40:
            continue
        same_ip = choice != 3
        assert encode_packet_reusing_payload(packet, frame, 14, ip_unchanged=same_ip) == \
            encode_packet(packet)
        broken = bytearray(frame)
        broken[14 + 20 + 16] ^= 0x5A
        out = encode_packet_reusing_payload(packet, bytes(broken), 14, ip_unchanged=same_ip)
        assert not verify_checksums(out)


STRIP_CONFIGS = [
    {"what": ["timestamps"], "packets": ["data", "pure_ack", "fin"], "how": "nop"},
    {"what": ["timestamps"], "how": "remove"},
    {"what": ["mptcp"], "how": "nop"},
    {"what": ["mptcp"], "how": "remove", "direction": "upstream"},
    {"what": ["dss"], "packets": ["data"], "how": "remove"},
    {"what": ["mp_capable"], "packets": ["syn"], "direction": "upstream"},
    {"what": ["unknown"], "how": "remove"},
    {"what": ["sack", "timestamps", "mss"], "packets": ["syn", "synack", "rst"], "how": "nop"},
    {"what": ["mp_join"], "packets": ["first_data", "data", "syn"], "direction": "downstream"},
]


@pytest.mark.parametrize("params", STRIP_CONFIGS, ids=lambda p: "-".join(
    [*p["what"], p.get("how", "remove"), p.get("direction", "both")]))
def test_raw_option_strip_equals_the_general_path(params: dict) -> None:
    fast_box = build_middlebox("strip_options", params, random.Random(1))
    slow_box = build_middlebox("strip_options", params, random.Random(1))
    fast = MiddleboxPipeline([fast_box], wire_codec())
    slow = MiddleboxPipeline([slow_box], FunctionCodec(decode_packet, encode_packet))
    rng = random.Random(hash(str(params)) & 0xFFFF)
    for _ in range(600):
        frame = random_frame(rng)
        direction = rng.choice(list(Direction))
        assert fast.process(frame, direction, 0.0) == slow.process(frame, direction, 0.0)
    assert fast_box.counters.as_dict() == slow_box.counters.as_dict()
    assert fast.stats.raw_fast_path > 300  # the fast path really ran (EOL frames decline)
    assert slow.stats.raw_fast_path == 0


def test_raw_option_strip_declines_what_it_cannot_reproduce() -> None:
    logging = build_middlebox("strip_options", {"what": ["timestamps"], "log_changes": True},
                              random.Random(1))
    first_only = build_middlebox("strip_options", {"what": ["dss"], "packets": ["first_data"]},
                                 random.Random(1))
    for box in (logging, first_only):
        assert MiddleboxPipeline([box], wire_codec()).process(
            random_frame(random.Random(3)), Direction.UPSTREAM, 0.0)
        assert MiddleboxPipeline([box], wire_codec()).stats.raw_fast_path == 0


def test_delay_line_bypass_only_when_idle_and_delay_free() -> None:
    line: DelayLine[bytes] = DelayLine(random.Random(1))
    assert line.bypass()
    assert line.stats.pushed == line.stats.released == 1
    line.configure(5.0, 0.0, None)
    assert not line.bypass()
    line.push(b"x", 0.0)
    line.configure(0.0, 0.0, None)
    assert not line.bypass()  # a queued frame must not be overtaken
    assert line.pop_due(1.0) == [b"x"]
    assert line.bypass()
