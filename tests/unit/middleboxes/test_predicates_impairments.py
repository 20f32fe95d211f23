"""Predicates (every one, on an MPTCP conversation) and the drop/delay boxes built on them."""

from __future__ import annotations

import random

import pytest

from middleboxes.predicates import STATELESS_PREDICATES
from testbed.wire.types import AddAddr
from tests.unit.middleboxes.packets import DOWN, UP, build, mptcp_conversation, packet

# Index of each packet of mptcp_conversation():
# 0 SYN MP_CAPABLE, 1 SYN/ACK MP_CAPABLE, 2 third ACK MP_CAPABLE, 3 first data MP_CAPABLE,
# 4 data DSS (up), 5 data DSS (down), 6 ADD_ADDR (down), 7 ADD_ADDR echo (up),
# 8 FIN + DATA_FIN (up), 9 MP_JOIN SYN, 10 MP_JOIN SYN/ACK, 11 MP_JOIN third ACK.
EXPECTED_MATCHES = {
    "any": list(range(12)),
    "syn": [0, 9],
    "synack": [1, 10],
    "first_data": [3, 5],
    "data": [3, 4, 5],
    "pure_ack": [2, 6, 7, 11],
    "fin": [8],
    "rst": [],
    "mp_capable": [0, 1, 2, 3],
    "mp_join": [9, 10, 11],
    "mp_join_syn": [9],
    "mp_join_synack": [10],
    "mp_join_ack": [11],
    "dss": [4, 5, 8],
    "data_fin": [8],
    "add_addr": [6],
    "add_addr_echo": [7],
    "remove_addr": [],
    "mp_prio": [],
    "mp_fail": [],
    "mp_fastclose": [],
    "mp_tcprst": [],
}


def dropped_indices(**params) -> list[int]:
    box = build("drop", **params)
    dropped = []
    for index, (p, direction) in enumerate(mptcp_conversation()):
        if box.process(p, direction, float(index)) == []:
            dropped.append(index)
    assert box.counters.dropped == len(dropped)
    assert box.counters.seen == 12
    return dropped


def test_every_stateless_predicate_is_covered_by_the_table() -> None:
    assert set(EXPECTED_MATCHES) == set(STATELESS_PREDICATES)


@pytest.mark.parametrize("name", sorted(EXPECTED_MATCHES))
def test_stateless_predicate(name: str) -> None:
    assert dropped_indices(match=[name]) == EXPECTED_MATCHES[name]


def test_predicates_are_anded_and_direction_filters() -> None:
    assert dropped_indices(match=["dss", "data"]) == [4, 5]
    assert dropped_indices(match=["dss", "data"], direction="downstream") == [5]
    assert dropped_indices(match=["mp_capable"], direction="upstream") == [0, 2, 3]


def test_subflow_selectors() -> None:
    assert dropped_indices(match=["subflow"], subflow_index=2) == [9, 10, 11]
    assert dropped_indices(match=["subflow"], subflow_index=1) == list(range(9))
    assert dropped_indices(match=["subflow"], subflow_index=3) == []
    assert dropped_indices(match=["subflow"], subflow_port=40001) == [9, 10, 11]
    assert dropped_indices(match=["subflow"], subflow_port=5201) == list(range(12))
    assert dropped_indices(match=["subflow"],
                           subflow_tuple="10.0.1.1:5201-10.0.0.1:40001") == [9, 10, 11]
    assert dropped_indices(match=["subflow", "syn"],
                           subflow_tuple="10.0.0.1:40000-10.0.1.1:5201") == [0]


def test_skip_and_limit_choose_among_matches() -> None:
    assert dropped_indices(match=["dss"], limit=1) == [4]
    assert dropped_indices(match=["dss"], skip=1) == [5, 8]
    assert dropped_indices(match=["dss"], skip=1, limit=1) == [5]


def data(seq: int, direction=UP, client_port: int = 40000):
    return packet(direction, seq=seq, payload=b"x" * 10, client_port=client_port)


def test_every_nth_data_counts_only_data_passing_the_other_predicates() -> None:
    box = build("drop", match=["every_nth_data"], every_nth=3, direction="upstream")
    results = []
    for i in range(9):
        results.append(box.process(data(i * 10), UP, 0.0) == [])
        assert box.process(packet(UP, seq=i), UP, 0.0) != []  # pure ACKs are not counted
        assert box.process(data(i * 10, DOWN), DOWN, 0.0) != []
    assert results == [False, False, True] * 3
    combined = build("drop", match=["every_nth_data", "subflow"], every_nth=2, subflow_index=2)
    outcome = []
    for i in range(4):
        assert combined.process(data(i, client_port=40000), UP, 0.0) != []
        outcome.append(combined.process(data(i, client_port=40001), UP, 0.0) == [])
    assert outcome == [False, True, False, True]


def test_probability_uses_the_seeded_rng_reproducibly() -> None:
    def run(seed: int) -> list[bool]:
        box = build("drop", seed=seed, match=["data"], probability=0.3)
        return [box.process(data(i), UP, 0.0) == [] for i in range(2000)]

    first = run(5)
    assert first == run(5)
    assert first != run(6)
    expected_rng = random.Random(5)
    assert first == [expected_rng.random() < 0.3 for _ in range(2000)]
    assert 0.25 < sum(first) / len(first) < 0.35
    never = build("drop", match=["data"], probability=0.0)
    assert all(never.process(data(i), UP, 0.0) != [] for i in range(100))


def test_limit_counts_acted_packets_with_probability() -> None:
    box = build("drop", match=["data"], probability=0.5, limit=3, seed=2)
    dropped = sum(box.process(data(i), UP, 0.0) == [] for i in range(200))
    assert dropped == 3


def test_delay_holds_only_matching_packets_until_due() -> None:
    box = build("delay", match=["mp_join_ack"], delay_ms=50)
    out = []
    for index, (p, direction) in enumerate(mptcp_conversation()):
        forwarded = box.process(p, direction, 1.0)
        out.append(index if forwarded else None)
    assert out == [*range(11), None]
    assert box.next_deadline() == pytest.approx(1.05)
    assert box.release(1.049) == []
    [(held, direction)] = box.release(1.05)
    assert direction is UP and held.tcp.src_port == 40001
    assert box.next_deadline() is None
    assert box.counters.as_dict() == {"seen": 12, "changed": 1, "dropped": 0, "injected": 0}


def test_delay_releases_in_due_order_with_seeded_jitter() -> None:
    box = build("delay", seed=9, match=["add_addr"], delay_ms=10, jitter_ms=20)
    rng = random.Random(9)
    expected = [10 + rng.random() * 20 for _ in range(3)]
    packets = [packet(DOWN, seq=i, options=[AddAddr(1, "10.0.2.1", hmac=i)]) for i in range(3)]
    for p in packets:
        assert box.process(p, DOWN, 0.0) == []
    order = sorted(range(3), key=lambda i: expected[i])
    assert box.next_deadline() == pytest.approx(expected[order[0]] / 1000)
    released = box.release(1.0)
    assert [p for p, _ in released] == [packets[i] for i in order]


def test_delay_flush_hands_out_everything_held() -> None:
    box = build("delay", match=["data"], delay_ms=1000)
    first, second = data(1), data(11)
    box.process(first, UP, 0.0)
    box.process(second, UP, 0.5)
    assert box.flush(0.6) == [(first, UP), (second, UP)]
    assert box.next_deadline() is None
