"""rewrite_seq: seq shifted one way, ACK and SACK shifted back the other way, modulo 2**32."""

from __future__ import annotations

import random

from middleboxes.flows import FlowKey
from testbed.wire.types import ACK, SYN, Sack, Timestamps
from tests.unit.middleboxes.packets import DOWN, UP, build, packet

TS = Timestamps(1, 2)


def test_fixed_offset_with_wraparound_both_ways() -> None:
    box = build("rewrite_seq", offset=100)
    syn = box.process(packet(UP, seq=0xFFFFFFF6, flags=SYN), UP, 0.0)[0]
    assert (syn.tcp.seq, syn.tcp.ack) == (90, 0)  # 0xFFFFFFF6 + 100 wraps to 90
    synack = box.process(packet(DOWN, seq=5000, ack=91, flags=SYN | ACK), DOWN, 0.0)[0]
    assert (synack.tcp.seq, synack.tcp.ack) == (5000, 0xFFFFFFF7)
    data = box.process(packet(UP, seq=0xFFFFFFF7, ack=5001, payload=b"x" * 20), UP, 0.0)[0]
    assert (data.tcp.seq, data.tcp.ack) == (91, 5001)
    ack = box.process(packet(DOWN, seq=5001, ack=111), DOWN, 0.0)[0]
    assert ack.tcp.ack == 11  # 111 - 100: past the wrap in the client's own space
    assert box.counters.as_dict() == {"seen": 4, "changed": 4, "dropped": 0, "injected": 0}


def test_random_offset_per_flow_from_injected_rng_and_reproducible() -> None:
    expected = random.Random(7)
    first, second = expected.getrandbits(32), expected.getrandbits(32)
    box = build("rewrite_seq", seed=7)
    out = box.process(packet(UP, seq=1000, flags=SYN), UP, 0.0)[0]
    assert out.tcp.seq == (1000 + first) % (1 << 32)
    other = box.process(packet(UP, seq=1000, flags=SYN, client_port=40001), UP, 0.0)[0]
    assert other.tcp.seq == (1000 + second) % (1 << 32)
    again = box.process(packet(UP, seq=1001, payload=b"a"), UP, 0.0)[0]
    assert again.tcp.seq == (1001 + first) % (1 << 32)
    back = box.process(packet(DOWN, seq=9, ack=again.tcp.seq + 1), DOWN, 0.0)[0]
    assert back.tcp.ack == 1002
    key = FlowKey("10.0.0.1", 40000, "10.0.1.1", 5201)
    assert box.offset_for(key, UP) == first


def test_sack_blocks_fixed_or_left_wrong() -> None:
    for fix_sack, expected in ((True, ((0xFFFFFFF0, 0x10),)), (False, ((0x50, 0x70),))):
        box = build("rewrite_seq", offset=0x60, fix_sack=fix_sack)
        box.process(packet(UP, seq=0xFFFFFF00, flags=SYN), UP, 0.0)
        sack = Sack(((0x50, 0x70),))
        out = box.process(packet(DOWN, seq=1, ack=0x40, options=[TS, sack]), DOWN, 0.0)[0]
        assert out.tcp.ack == 0xFFFFFFE0
        assert out.tcp.options == [TS, Sack(expected)]


def test_downstream_rewrite_leaves_upstream_seq_and_unacked_syn_alone() -> None:
    box = build("rewrite_seq", direction="downstream", offset=1000)
    syn = box.process(packet(UP, seq=50, flags=SYN), UP, 0.0)[0]
    assert (syn.tcp.seq, syn.tcp.ack) == (50, 0)  # no ACK flag: the ack field means nothing
    assert box.counters.changed == 0
    synack = box.process(packet(DOWN, seq=7000, ack=51, flags=SYN | ACK), DOWN, 0.0)[0]
    assert (synack.tcp.seq, synack.tcp.ack) == (8000, 51)
    ack = box.process(packet(UP, seq=51, ack=8001), UP, 0.0)[0]
    assert (ack.tcp.seq, ack.tcp.ack) == (51, 7001)


def test_both_directions_use_independent_offsets() -> None:
    box = build("rewrite_seq", direction="both", seed=3)
    rng = random.Random(3)
    up_offset, down_offset = rng.getrandbits(32), rng.getrandbits(32)
    syn = box.process(packet(UP, seq=10, flags=SYN), UP, 0.0)[0]
    synack = box.process(packet(DOWN, seq=20, ack=syn.tcp.seq + 1, flags=SYN | ACK), DOWN, 0.0)[0]
    assert syn.tcp.seq == (10 + up_offset) % (1 << 32)
    assert synack.tcp.seq == (20 + down_offset) % (1 << 32)
    assert synack.tcp.ack == 11
    ack = box.process(packet(UP, seq=11, ack=synack.tcp.seq + 1), UP, 0.0)[0]
    assert ack.tcp.ack == 21
