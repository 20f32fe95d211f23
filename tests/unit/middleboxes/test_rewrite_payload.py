"""rewrite_payload: the ALG edit, and seq/ack/SACK fixed on later packets in both directions."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.wire.tcp_options import options_length
from testbed.wire.types import ACK, FIN, PSH, SYN, Sack, Timestamps
from tests.unit.middleboxes.packets import DOWN, UP, build, packet

TS = Timestamps(1, 2)


def up(seq: int, payload: bytes, ack: int = 5001, flags: int = ACK):
    return packet(UP, seq=seq, ack=ack, payload=payload, flags=flags)


def down_ack(ack: int, seq: int = 5001, sack=None, payload: bytes = b""):
    return packet(DOWN, seq=seq, ack=ack, payload=payload,
                  options=[Sack(sack)] if sack else [])


def handshake(box, client_isn: int = 1000, server_isn: int = 5000) -> None:
    box.process(packet(UP, seq=client_isn, flags=SYN), UP, 0.0)
    box.process(packet(DOWN, seq=server_isn, ack=client_isn + 1, flags=SYN | ACK), DOWN, 0.0)


def test_growing_replacement_shifts_later_seqs_and_acks_back() -> None:
    box = build("rewrite_payload", pattern="ABC", replacement="ABCDE", direction="upstream")
    handshake(box)
    [s1] = box.process(up(1001, b"xxABCyy"), UP, 0.0)
    assert (s1.tcp.seq, s1.tcp.payload) == (1001, b"xxABCDEyy")
    [s2] = box.process(up(1008, b"ABCABC"), UP, 0.0)
    assert (s2.tcp.seq, s2.tcp.payload) == (1010, b"ABCDEABCDE")
    [s3] = box.process(up(1014, b"zz", flags=ACK | FIN), UP, 0.0)
    assert (s3.tcp.seq, s3.tcp.payload) == (1020, b"zz")
    # ACKs and SACK blocks from the server are in the rewritten space: shift them back. An ACK
    # inside a replacement does not acknowledge the pattern. (In rising order: edits below an
    # ACK are forgotten, so an older ACK arriving later maps only approximately.)
    [sacked] = box.process(down_ack(1003, sack=((1015, 1020), (1020, 1022))), DOWN, 0.0)
    assert sacked.tcp.options == [Sack(((1011, 1014), (1014, 1016)))]
    cases = {1003: 1003, 1006: 1003, 1008: 1006, 1010: 1008, 1022: 1016, 1023: 1017}
    for rewritten, original in cases.items():
        [ack] = box.process(down_ack(rewritten), DOWN, 0.0)
        assert ack.tcp.ack == original, rewritten
    assert box.counters.seen == 2 + 3 + len(cases) + 1


def test_retransmission_gets_the_same_edit_without_counting_twice() -> None:
    box = build("rewrite_payload", pattern="ABC", replacement="ABCDE", direction="upstream")
    handshake(box)
    box.process(up(1001, b"xxABCyy"), UP, 0.0)
    box.process(up(1008, b"ABCABC"), UP, 0.0)
    [again] = box.process(up(1008, b"ABCABC"), UP, 0.0)
    assert (again.tcp.seq, again.tcp.payload) == (1010, b"ABCDEABCDE")
    [first_again] = box.process(up(1001, b"xxABCyy"), UP, 0.0)
    assert first_again.tcp.seq == 1001
    [later] = box.process(up(1014, b"zz"), UP, 0.0)
    assert later.tcp.seq == 1020


def test_shrinking_replacement_in_both_directions() -> None:
    box = build("rewrite_payload", pattern="LONGWORD", replacement="W")  # -7 bytes
    handshake(box)
    [u1] = box.process(up(1001, b"aLONGWORDb", ack=5001), UP, 0.0)
    assert (u1.tcp.seq, u1.tcp.payload) == (1001, b"aWb")
    [d1] = box.process(down_ack(1004, seq=5001, payload=b"LONGWORD!"), DOWN, 0.0)
    assert (d1.tcp.seq, d1.tcp.ack, d1.tcp.payload) == (5001, 1011, b"W!")
    # The client acknowledges the server's rewritten bytes; its own seq is shifted too.
    [u2] = box.process(up(1011, b"tail", ack=5003), UP, 0.0)
    assert (u2.tcp.seq, u2.tcp.ack) == (1004, 5010)
    [d2] = box.process(down_ack(1008, seq=5010, payload=b"more"), DOWN, 0.0)
    assert (d2.tcp.seq, d2.tcp.ack) == (5003, 1015)


def test_sequence_wraparound() -> None:
    box = build("rewrite_payload", pattern="ab", replacement="abcd", direction="upstream")
    isn = 0xFFFFFFF8
    handshake(box, client_isn=isn)
    [s1] = box.process(up(0xFFFFFFF9, b"0123456ab"), UP, 0.0)  # edit at 0x00000000 (wrapped)
    assert s1.tcp.payload == b"0123456abcd"
    [s2] = box.process(up(0x00000002, b"zz"), UP, 0.0)
    assert s2.tcp.seq == 0x00000004
    [ack_before] = box.process(down_ack(0xFFFFFFFF), DOWN, 0.0)
    assert ack_before.tcp.ack == 0xFFFFFFFF
    [ack] = box.process(down_ack(0x00000006), DOWN, 0.0)
    assert ack.tcp.ack == 0x00000004


def test_same_length_replacement_changes_payload_only() -> None:
    box = build("rewrite_payload", pattern="10,0,0,1", replacement="19,8,5,1")
    handshake(box)
    [s1] = box.process(up(1001, b"PORT 10,0,0,1,156,64\r\n"), UP, 0.0)
    assert (s1.tcp.seq, s1.tcp.payload) == (1001, b"PORT 19,8,5,1,156,64\r\n")
    [ack] = box.process(down_ack(1023), DOWN, 0.0)
    assert ack.tcp.ack == 1023
    assert box.remembered_edits() == 0
    assert box.counters.changed == 1


def test_pattern_split_across_segments_is_not_matched() -> None:
    box = build("rewrite_payload", pattern="ABCD", replacement="X")
    handshake(box)
    [s1] = box.process(up(1001, b"xxAB"), UP, 0.0)
    [s2] = box.process(up(1005, b"CDyy"), UP, 0.0)
    assert (s1.tcp.payload, s2.tcp.payload, s2.tcp.seq) == (b"xxAB", b"CDyy", 1005)


def test_acknowledged_edits_are_forgotten_but_still_shift_later_data() -> None:
    box = build("rewrite_payload", pattern="A", replacement="AA", direction="upstream")
    handshake(box)
    seq = 1001
    for _ in range(50):
        box.process(up(seq, b"A-"), UP, 0.0)
        seq += 2
    assert box.remembered_edits() == 50
    [ack] = box.process(down_ack(1001 + 150), DOWN, 0.0)  # all 50 segments (3 bytes each)
    assert ack.tcp.ack == 1101
    assert box.remembered_edits() == 0
    [later] = box.process(up(1101, b"A"), UP, 0.0)
    assert (later.tcp.seq, later.tcp.payload) == (1151, b"AA")
    [ack2] = box.process(down_ack(1153), DOWN, 0.0)
    assert ack2.tcp.ack == 1102


def test_limit_rewrites_only_the_first_occurrences_and_their_retransmissions() -> None:
    box = build("rewrite_payload", pattern="A", replacement="BB", limit=2, direction="upstream")
    handshake(box)
    [s1] = box.process(up(1001, b"xAyA"), UP, 0.0)
    assert s1.tcp.payload == b"xBByBB"
    [s2] = box.process(up(1005, b"AzA"), UP, 0.0)
    assert (s2.tcp.seq, s2.tcp.payload) == (1007, b"AzA")
    [again] = box.process(up(1001, b"xAyAAzA"), UP, 0.0)  # a retransmission merging both
    assert (again.tcp.seq, again.tcp.payload) == (1001, b"xBByBBAzA")
    assert box.counters.changed == 3  # s2 kept its bytes but its seq moved


def test_growth_beyond_the_mtu_leaves_in_pieces_with_options_copied() -> None:
    box = build("rewrite_payload", pattern="A", replacement="AAA", direction="upstream")
    handshake(box)
    full = packet(UP, seq=1001, ack=5001, flags=ACK | PSH, payload=b"xA" + b"y" * 1446,
                  options=[TS])  # 20 + 20 + 12 + 1448 = 1500: a full-size segment
    pieces = box.process(full, UP, 0.0)
    assert [(p.tcp.seq, len(p.tcp.payload)) for p in pieces] == [(1001, 1448), (2449, 2)]
    assert b"".join(p.tcp.payload for p in pieces) == b"xAAA" + b"y" * 1446
    assert [p.tcp.options for p in pieces] == [[TS], [TS]]
    assert [p.tcp.flags for p in pieces] == [ACK, ACK | PSH]
    assert all(40 + options_length(p.tcp.options) + len(p.tcp.payload) <= 1500 for p in pieces)
    assert box.counters.injected == 1
    [after] = box.process(up(2449, b"z"), UP, 0.0)
    assert after.tcp.seq == 2451


def test_mtu_zero_never_cuts() -> None:
    box = build("rewrite_payload", pattern="A", replacement="AAA", mtu_bytes=0)
    handshake(box)
    [whole] = box.process(up(1001, b"A" * 1448), UP, 0.0)
    assert len(whole.tcp.payload) == 3 * 1448


def test_packets_that_did_not_grow_are_never_cut() -> None:
    box = build("rewrite_payload", pattern="A", replacement="AAA", direction="upstream")
    handshake(box)
    jumbo = packet(UP, seq=1001, ack=5001, payload=b"z" * 3000)  # arrived bigger than 1500
    assert box.process(jumbo, UP, 0.0) == [jumbo]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(st.sampled_from([b"x", b"yy", b"AB"]), max_size=12), min_size=1,
                max_size=15),
       st.sampled_from([b"", b"Z", b"ZZ", b"ZZZZZ"]),
       st.integers(min_value=0, max_value=(1 << 32) - 1))
def test_stream_rewrite_and_ack_mapping_hold_for_any_segmentation(
        segments: list[list[bytes]], replacement: bytes, isn: int) -> None:
    box = build("rewrite_payload", pattern="AB", replacement=replacement.decode(),
                direction="upstream", mtu_bytes=0)
    handshake(box, client_isn=isn)
    seq = (isn + 1) % (1 << 32)
    rewritten_seq = seq
    outputs = []
    for parts in segments:
        payload = b"".join(parts)
        [out] = box.process(up(seq, payload), UP, 0.0)
        outputs.append(out)
        seq = (seq + len(payload)) % (1 << 32)
        assert out.tcp.seq == rewritten_seq  # later segments shifted by the edits before them
        rewritten_seq = (rewritten_seq + len(out.tcp.payload)) % (1 << 32)
        [ack] = box.process(down_ack(rewritten_seq), DOWN, 0.0)  # the receiver got all of it
        assert ack.tcp.ack == seq
    original = b"".join(b"".join(parts) for parts in segments)
    assert b"".join(p.tcp.payload for p in outputs) == original.replace(b"AB", replacement)


def test_edit_log_records_each_edit_once_at_sender_offsets() -> None:
    """Offsets are relative to the first payload byte (ISN + 1), before this box's own shifts,
    and a retransmitted segment edited again is not logged again."""
    box = build("rewrite_payload", pattern="ABC", replacement="ABCDE", direction="upstream")
    handshake(box, client_isn=1000)
    box.process(up(1001, b"xxABCyy"), UP, 0.0)
    box.process(up(1008, b"ABCABC"), UP, 0.0)
    box.process(up(1008, b"ABCABC"), UP, 0.0)  # retransmission
    box.process(up(1001, b"xxABCyy"), UP, 0.0)  # retransmission
    entries = box.edit_log.export()["entries"]
    assert [(e["offset"], e["old"], e["new"], e["direction"], e["from_syn"]) for e in entries] == [
        (2, b"ABC".hex(), b"ABCDE".hex(), "upstream", True),
        (7, b"ABC".hex(), b"ABCDE".hex(), "upstream", True),
        (10, b"ABC".hex(), b"ABCDE".hex(), "upstream", True),
    ]
    assert box.edit_log.export()["overflow"] == 0
    assert {e["shift"] for e in entries} == {2}  # the growth each edit adds to the stream


def test_edit_log_limit_counts_the_rest() -> None:
    box = build("rewrite_payload", pattern="A", replacement="B", direction="upstream",
                edit_log_limit=1)
    handshake(box)
    box.process(up(1001, b"AxA"), UP, 0.0)
    exported = box.edit_log.export()
    assert [e["offset"] for e in exported["entries"]] == [0]
    assert exported["overflow"] == 1


def test_edit_log_without_syn_counts_from_first_byte_seen() -> None:
    box = build("rewrite_payload", pattern="A", replacement="B", direction="upstream")
    box.process(up(5000, b"xxA"), UP, 0.0)
    [entry] = box.edit_log.export()["entries"]
    assert (entry["offset"], entry["from_syn"]) == (2, False)
