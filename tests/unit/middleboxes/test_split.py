"""split: pieces of at most mss_bytes with consecutive seqs and the configured options."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.wire.types import ACK, FIN, PSH, SYN, URG, Dss, Timestamps
from tests.unit.middleboxes.packets import DOWN, UP, build, packet

TS = Timestamps(11, 22)
DSS = Dss(data_ack=5, dsn=100, subflow_seq=1, data_len=2500)


def big(seq: int = 1000, length: int = 2500, flags: int = ACK | PSH | FIN):
    return packet(UP, seq=seq, ack=77, flags=flags, payload=bytes(range(256)) * 9 + b"z" * 196
                  if length == 2500 else b"q" * length, options=[TS, DSS], ident=0xFFFF)


def test_tso_style_split_copies_options_and_keeps_fin_psh_on_last() -> None:
    box = build("split", mss_bytes=1000)
    original = big()
    payload = original.tcp.payload
    pieces = box.process(original, UP, 0.0)
    assert [(p.tcp.seq, len(p.tcp.payload)) for p in pieces] == [(1000, 1000), (2000, 1000),
                                                                   (3000, 500)]
    assert b"".join(p.tcp.payload for p in pieces) == payload
    assert [p.tcp.flags for p in pieces] == [ACK, ACK, ACK | PSH | FIN]
    assert all(p.tcp.options == [TS, DSS] and p.tcp.ack == 77 for p in pieces)
    assert [p.ident for p in pieces] == [0xFFFF, 0, 1]  # IP ID increments per piece, wrapping
    assert pieces[0].tcp.options is not pieces[1].tcp.options
    assert box.counters.as_dict() == {"seen": 1, "changed": 1, "dropped": 0, "injected": 2}


def test_options_only_on_first_piece() -> None:
    box = build("split", mss_bytes=1000, options_on_pieces="first")
    pieces = box.process(big(), UP, 0.0)
    assert [p.tcp.options for p in pieces] == [[TS, DSS], [], []]


def test_mptcp_options_only_on_first_piece() -> None:
    box = build("split", mss_bytes=1000, options_on_pieces="first_mptcp")
    pieces = box.process(big(), UP, 0.0)
    assert [p.tcp.options for p in pieces] == [[TS, DSS], [TS], [TS]]


def test_sequence_wraps_between_pieces() -> None:
    box = build("split", mss_bytes=100)
    pieces = box.process(big(seq=0xFFFFFFC0, length=250), UP, 0.0)
    assert [p.tcp.seq for p in pieces] == [0xFFFFFFC0, 0x24, 0x88]


def test_small_syn_rst_urg_and_other_direction_pass_unchanged() -> None:
    box = build("split", mss_bytes=100, direction="upstream")
    small = big(length=100)
    assert box.process(small, UP, 0.0) == [small]
    for flags in (SYN, ACK | URG):
        p = big(length=300, flags=flags)
        assert box.process(p, UP, 0.0) == [p]
    down = packet(DOWN, payload=b"d" * 300)
    assert box.process(down, DOWN, 0.0) == [down]
    assert box.counters.changed == 0 and box.counters.seen == 4


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=9000), st.integers(min_value=1, max_value=3000),
       st.integers(min_value=0, max_value=(1 << 32) - 1))
def test_split_conserves_bytes_and_sequence(length: int, mss: int, seq: int) -> None:
    box = build("split", mss_bytes=mss)
    payload = bytes(i % 256 for i in range(length))
    pieces = box.process(packet(UP, seq=seq, payload=payload, flags=ACK | FIN), UP, 0.0)
    assert b"".join(p.tcp.payload for p in pieces) == payload
    assert len(pieces) == -(-length // mss)
    expected = seq
    for p in pieces:
        assert p.tcp.seq == expected and 0 < len(p.tcp.payload) <= mss
        expected = (expected + len(p.tcp.payload)) % (1 << 32)
    assert sum(1 for p in pieces if p.tcp.flags & FIN) == 1 and pieces[-1].tcp.flags & FIN
