"""Pure-logic units: state table, RTT estimator, reassembly, scoreboard, config."""

from __future__ import annotations

import pytest

from testbed.mptcp.config import StackConfig
from testbed.mptcp.errors import LocalProtocolError
from testbed.mptcp.mapping import MappingReceiver
from testbed.mptcp.reassembly import Reassembly
from testbed.mptcp.rtt import RttEstimator
from testbed.mptcp.scoreboard import Scoreboard, SentSegment
from testbed.mptcp.tcp_state import TcpEvent, TcpState, render_diagram, transition
from testbed.wire.checksum import dss_checksum


def test_state_table_close_sequences() -> None:
    state = transition(TcpState.CLOSED, TcpEvent.ACTIVE_OPEN)
    assert state is TcpState.SYN_SENT
    state = transition(state, TcpEvent.RECV_SYNACK)
    assert state is TcpState.ESTABLISHED
    # active close
    active = transition(state, TcpEvent.CLOSE)
    active = transition(active, TcpEvent.RECV_ACK_OF_FIN)
    assert active is TcpState.FIN_WAIT_2
    assert transition(active, TcpEvent.RECV_FIN) is TcpState.TIME_WAIT
    # passive close
    passive = transition(state, TcpEvent.RECV_FIN)
    assert passive is TcpState.CLOSE_WAIT
    passive = transition(passive, TcpEvent.CLOSE)
    assert transition(passive, TcpEvent.RECV_ACK_OF_FIN) is TcpState.CLOSED
    # simultaneous close
    both = transition(transition(state, TcpEvent.CLOSE), TcpEvent.RECV_FIN)
    assert both is TcpState.CLOSING
    assert transition(both, TcpEvent.RECV_ACK_OF_FIN) is TcpState.TIME_WAIT


def test_state_table_rejects_missing_entry_with_names() -> None:
    with pytest.raises(LocalProtocolError, match=r"recv_fin.*SYN_SENT"):
        transition(TcpState.SYN_SENT, TcpEvent.RECV_FIN)
    assert '"TIME_WAIT" -> "CLOSED" [label="timeout_2msl"]' in render_diagram()


def test_rtt_estimator_rfc6298_values() -> None:
    rtt = RttEstimator(initial_rto=1.0, min_rto=0.2, max_rto=120.0)
    assert rtt.rto == 1.0
    rtt.add_sample(0.1)  # SRTT=0.1, RTTVAR=0.05 -> 0.1 + 4*0.05 = 0.3
    assert rtt.srtt == pytest.approx(0.1)
    assert rtt.rto == pytest.approx(0.3)
    rtt.add_sample(0.2)  # RTTVAR=0.75*0.05+0.25*0.1=0.0625, SRTT=0.1125 -> 0.3625
    assert rtt.rttvar == pytest.approx(0.0625)
    assert rtt.srtt == pytest.approx(0.1125)
    assert rtt.rto == pytest.approx(0.3625)
    rtt.on_timeout()
    assert rtt.rto == pytest.approx(0.725)
    rtt.on_timeout()
    assert rtt.rto == pytest.approx(1.45)
    rtt.add_sample(0.01)  # a new sample clears the backoff; the floor applies
    assert rtt.rto == pytest.approx(max(0.2, rtt.srtt + 4 * rtt.rttvar))


def test_rto_is_capped_at_max() -> None:
    rtt = RttEstimator(initial_rto=1.0, min_rto=0.2, max_rto=120.0)
    for _ in range(10):
        rtt.on_timeout()
    assert rtt.rto == 120.0


def test_reassembly_out_of_order_and_overlaps() -> None:
    stream = bytes(range(256)) * 2  # byte at offset o is stream[o - 100]
    r = Reassembly(100)

    def piece(start: int, end: int) -> bytes:
        return stream[start - 100:end - 100]

    assert r.add(110, piece(110, 120)) == b""
    assert r.add(130, piece(130, 140)) == b""
    assert r.ranges() == [(130, 140), (110, 120)]  # most recent first (RFC 2018)
    assert r.add(105, piece(105, 115)) == b""  # overlaps the 110 piece: merged
    assert r.ranges()[0] == (105, 120) and r.buffered == 25
    assert r.add(100, piece(100, 105)) == piece(100, 120)
    assert r.next == 120
    assert r.add(90, stream[:1] * 10 + piece(100, 140)) == piece(120, 140)
    assert r.next == 140 and r.buffered == 0
    assert r.add(100, piece(100, 140)) == b""  # a full duplicate


def _segment(start: int, length: int) -> SentSegment:
    return SentSegment(start=start, end=start + length, payload=b"x" * length, dsn=start)


def test_scoreboard_sack_loss_detection_rfc6675() -> None:
    board = Scoreboard(dupthresh=3)
    for i in range(6):
        board.add(_segment(1 + i * 100, 100))
    assert board.pipe == 600
    board.apply_sack([(201, 401)])  # two segments above the hole: not yet lost
    assert board.detect_losses(100) == []
    board.apply_sack([(401, 501)])  # third SACKed segment: the hole [1,201) is lost
    lost = board.detect_losses(100)
    assert [s.start for s in lost] == [1, 101]
    assert board.pipe == 100  # only [501,601) is still believed in flight
    board.on_retransmit(lost[0], now=1.0)
    assert board.pipe == 200
    assert board.detect_losses(100) == []  # a retransmitted segment is not re-declared lost
    done = board.acknowledge(151)  # partial ACK cuts the second segment
    assert [s.start for s in done] == [1]
    assert board.first().start == 151 and len(board.first().payload) == 50


def test_mapping_receiver_checksum_rejects_corruption() -> None:
    rx = MappingReceiver(checksum=True)
    payload = b"hello world"
    good = dss_checksum(5000, 1, len(payload), payload)
    rx.add(1, len(payload), 5000, len(payload), good, False)
    out = rx.feed(1, payload[:5])
    assert out.delivered == []  # a checksummed mapping is delivered whole
    out = rx.feed(6, payload[5:])
    assert out.delivered == [(5000, payload)]
    rx.add(12, 3, 5011, 3, dss_checksum(5011, 12, 3, b"abc"), False)
    out = rx.feed(12, b"abX")
    assert out.delivered == [] and out.checksum_failed is not None
    assert out.checksum_failed.dsn == 5011


def test_mapping_receiver_tolerates_duplicates_and_flags_contradictions() -> None:
    rx = MappingReceiver(checksum=False)
    assert rx.add(1, 100, 7000, 100, None, False)
    assert rx.add(1, 100, 7000, 100, None, False)  # TSO copy
    assert not rx.add(1, 100, 9000, 100, None, False)  # different DSN for the same bytes
    assert rx.not_matching == 1
    out = rx.feed(1, b"x" * 60)
    assert out.delivered == [(7000, b"x" * 60)]
    out = rx.feed(61, b"y" * 40)
    assert out.delivered == [(7060, b"y" * 40)]
    out = rx.feed(101, b"unmapped")
    assert out.delivered == [] and out.unmapped  # in order and no mapping: stripped
    rx.set_infinite(101, 7100)  # what the connection does when it may fall back
    assert rx.process().delivered == [(7100, b"unmapped")]


def test_config_rejects_unknown_and_bad_values() -> None:
    with pytest.raises(ValueError, match=r"unknown key.*'schedular'"):
        StackConfig.from_dict({"schedular": "round_robin"})
    with pytest.raises(ValueError, match="congestion_control"):
        StackConfig(congestion_control="cubic")
    with pytest.raises(ValueError, match="mss"):
        StackConfig(mss=0)
    assert StackConfig.from_dict({"scheduler": "redundant"}).scheduler == "redundant"
    assert StackConfig(recv_buffer=4 * 1024 * 1024).window_shift == 7
    assert StackConfig(recv_buffer=65535).window_shift == 0


def test_reassembly_random_arrival_order_matches_stream() -> None:
    import random

    rng = random.Random(5)
    stream = rng.randbytes(20_000)
    chunks = []
    offset = 0
    while offset < len(stream):
        size = rng.randint(1, 1500)
        chunks.append((offset, stream[offset:offset + size]))
        offset += size
    # duplicates and overlapping re-segmented copies, in random order
    for _ in range(40):
        start = rng.randrange(len(stream))
        chunks.append((start, stream[start:start + rng.randint(1, 3000)]))
    rng.shuffle(chunks)
    r = Reassembly(0)
    out = bytearray()
    for start, data in chunks:
        out += r.add(start, data)
        for left, right in r.ranges():
            assert r.next < left < right
    assert bytes(out) == stream and r.buffered == 0 and r.ranges() == []


def test_reassembly_interleaved_runs_keep_exact_sack_ranges() -> None:
    """Two subflows' runs of DSNs interleaving (the tail-append and pass-through fast
    paths), with some loss and late repair: the held ranges always equal a naive model."""
    import random

    rng = random.Random(9)
    stream = rng.randbytes(60_000)
    chunks = [(offset, stream[offset:offset + 1000]) for offset in range(0, 60_000, 1000)]
    runs = [chunks[i:i + 6] for i in range(0, len(chunks), 6)]
    early, late = runs[1::2], runs[0::2]  # the "fast path" delivers every other run first
    order = [c for pair in zip(early, late, strict=False) for run in pair for c in run]
    repairs = [c for c in order if rng.random() < 0.1]
    order = [c for c in order if c not in repairs] + repairs
    r = Reassembly(0)
    out = bytearray()
    held: set[int] = set()
    for start, data in order:
        out += r.add(start, data)
        held |= set(range(start, start + len(data)))
        held = {b for b in held if b >= r.next}
        model = []
        for b in sorted(held):
            if model and model[-1][1] == b:
                model[-1][1] = b + 1
            else:
                model.append([b, b + 1])
        assert sorted(r.ranges(limit=1000)) == [tuple(m) for m in model]
        assert r.buffered == len(held)
    assert bytes(out) == stream and r.buffered == 0


def test_connection_mode_table_has_no_way_back_from_fallback() -> None:
    from testbed.mptcp.fallback import MODE_TRANSITIONS, next_mode

    assert next_mode("pending", "keys_exchanged") == "mptcp"
    assert next_mode("mptcp", "fallback") == "fallback"
    assert MODE_TRANSITIONS["fallback"] == {}
    with pytest.raises(LocalProtocolError, match=r"keys_exchanged.*fallback"):
        next_mode("fallback", "keys_exchanged")


def test_mapping_copied_onto_every_segment_by_tso_is_tolerated() -> None:
    rx = MappingReceiver(checksum=False)
    stream = bytes(range(256)) * 12  # 3072 bytes under one 3000-byte mapping
    delivered = []
    for offset in range(1, 3001, 1000):
        assert rx.add(1, 3000, 50_000, 3000, None, False)  # the same DSS on each piece
        delivered += rx.feed(offset, stream[offset - 1:offset + 999]).delivered
    assert rx.not_matching == 0
    assert b"".join(d for _, d in delivered) == stream[:3000]
    assert [dsn for dsn, _ in delivered] == [50_000, 51_000, 52_000]


def test_mapping_contradicting_the_one_being_consumed_is_dropped() -> None:
    rx = MappingReceiver(checksum=False)
    assert rx.add(1, 3000, 50_000, 3000, None, False)
    assert rx.feed(1, b"a" * 1000).delivered == [(50_000, b"a" * 1000)]
    assert not rx.add(1, 3000, 60_000, 3000, None, False)  # other DSNs for the same bytes
    assert rx.not_matching == 1
    assert rx.feed(1001, b"b" * 10).delivered == [(51_000, b"b" * 10)]
