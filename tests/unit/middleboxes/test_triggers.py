"""Triggers (middleboxes.triggers): any catalogue box acts only inside its window, per flow,
and passes (and counts) everything else; the windows and selectors decide per packet."""

from __future__ import annotations

import random

import pytest

from middleboxes.registry import MIDDLEBOXES, build_middlebox
from middleboxes.spec import MiddleboxSpecError
from middleboxes.triggers import Triggered
from testbed.net.params import LinkParams
from testbed.sim.rng import derive_rng
from testbed.sim.transfer import PathSpec, TransferSpec, run_transfer
from testbed.wire.types import ACK, SYN, Dss, MpCapable, MpJoinSyn, Timestamps
from tests.unit.middleboxes.packets import DOWN, SYN_OPTIONS, UP, build, packet
from tests.unit.scenarios.test_transfers import assert_intact

TS = Timestamps(5, 6)


def data(seq: int, size: int, direction=UP, **kw):
    return packet(direction, seq=seq, flags=ACK, payload=b"x" * size,
                  options=[TS, Dss(data_ack=1, dsn=seq, subflow_seq=seq, data_len=size)], **kw)


def has_dss(p) -> bool:
    return p.tcp.find(Dss) is not None


def test_a_box_without_triggers_is_not_wrapped() -> None:
    assert not isinstance(build("strip_options"), Triggered)
    assert isinstance(build("strip_options", after_bytes=1), Triggered)
    assert isinstance(build_middlebox("drop", {"match": ["dss"]}, random.Random(1),
                                      switchable=True), Triggered)


def test_after_bytes_counts_payload_seen_before_the_packet_both_directions() -> None:
    box = build("strip_options", what=["dss"], after_bytes=2500)
    outs = [box.process(data(1 + 1000 * i, 1000), UP, 0.0)[0] for i in range(2)]
    assert all(has_dss(p) for p in outs)  # 0 and 1000 bytes seen before them
    # a downstream ACK: 2000 bytes seen, still below the threshold
    assert has_dss(box.process(packet(DOWN, options=[TS, Dss(data_ack=2001)]), DOWN, 0.0)[0])
    # 2000 seen before this one: passes; it makes 3000
    assert has_dss(box.process(data(2001, 1000), UP, 0.0)[0])
    # now 3000 >= 2500: stripped, in both directions
    assert not has_dss(box.process(data(3001, 1000), UP, 0.0)[0])
    assert not has_dss(box.process(packet(DOWN, options=[TS, Dss(data_ack=4001)]), DOWN, 0.0)[0])
    assert box.counters.as_dict() == {"seen": 6, "changed": 2, "dropped": 0, "injected": 0,
                                      "inactive": 4}


def test_after_bytes_is_per_flow() -> None:
    box = build("drop", match=["data"], after_bytes=1000)
    assert box.process(data(1, 1000), UP, 0.0)  # flow 1: passes, 1000 seen
    assert box.process(data(1, 1000, client_port=40001), UP, 0.0)  # flow 2 starts at 0
    assert box.process(data(1001, 10), UP, 0.0) == []  # flow 1 over its threshold
    assert box.counters.dropped == 1 and box.counters.inactive == 2


def test_after_s_and_until_s_are_measured_from_the_flows_first_packet() -> None:
    box = build("drop", match=["data"], after_s=1.0, until_s=2.0)
    assert box.process(packet(flags=SYN, options=SYN_OPTIONS), UP, 10.0)  # flow seen at 10 s
    assert box.process(data(1, 10), UP, 10.9)
    assert box.process(data(11, 10), UP, 11.0) == []  # 1.0 s: inside [1, 2)
    assert box.process(data(21, 10), UP, 11.99) == []
    assert box.process(data(31, 10), UP, 12.0)  # until_s reached
    # another flow first seen at 11.5 s has its own clock
    assert box.process(data(1, 10, client_port=40001), UP, 11.5)
    assert box.process(data(11, 10, client_port=40001), UP, 12.6) == []
    assert box.counters.as_dict() == {"seen": 7, "changed": 0, "dropped": 3, "injected": 0,
                                      "inactive": 4}


@pytest.mark.parametrize("flows, join_stripped, initial_stripped",
                         [("join", True, False), ("initial", False, True), ("all", True, True)])
def test_flows_selects_mp_join_subflows_by_their_syn(flows, join_stripped, initial_stripped):
    box = build("strip_options", what=["dss"], flows=flows)
    box.process(packet(flags=SYN, options=[*SYN_OPTIONS, MpCapable()]), UP, 0.0)
    join_syn = MpJoinSyn(backup=False, address_id=1, receiver_token=1, sender_nonce=2)
    box.process(packet(flags=SYN, client_port=40001, options=[*SYN_OPTIONS, join_syn]), UP, 0.0)
    initial = box.process(data(1, 100), UP, 0.1)[0]
    join = box.process(data(1, 100, client_port=40001), UP, 0.1)[0]
    assert has_dss(join) is not join_stripped
    assert has_dss(initial) is not initial_stripped


def test_active_false_and_set_active_switch_the_whole_box() -> None:
    box = build("drop", match=["data"], active=False)
    assert box.process(data(1, 10), UP, 0.0)
    box.set_active(True)
    assert box.process(data(11, 10), UP, 0.1) == []
    box.set_active(False)
    assert box.process(data(21, 10), UP, 0.2)
    assert (box.counters.dropped, box.counters.inactive, box.counters.seen) == (1, 2, 3)


def test_held_packets_are_released_after_the_box_turns_inactive() -> None:
    box = build_middlebox("delay", {"match": ["data"], "delay_ms": 100.0}, random.Random(1),
                          switchable=True)
    assert box.process(data(1, 10), UP, 0.0) == []
    box.set_active(False)
    assert box.process(data(11, 10), UP, 0.05)  # passes at once
    assert box.next_deadline() == pytest.approx(0.1)
    assert [p.tcp.seq for p, _ in box.release(0.1)] == [1]


def test_the_wrapper_keeps_the_boxes_logs_and_attributes() -> None:
    box = build("strip_options", what=["dss"], after_bytes=1, log_changes=True)
    box.process(data(1, 10), UP, 0.0)
    box.process(data(11, 10), UP, 0.0)
    assert box.params.after_bytes == 1
    assert [e["change"] for e in box.change_log.entries] == ["stripped dss (remove)"]
    nat = build("nat", public_address="10.0.1.100", after_s=1.0)
    assert nat.owned_addresses() == ["10.0.1.100"]


@pytest.mark.parametrize("name", sorted(MIDDLEBOXES))
def test_every_catalogue_box_takes_the_triggers(name) -> None:
    required = {"nat": {"public_address": "10.0.1.100"}, "drop": {"match": ["any"]},
                "nat64": {"pool_address": "10.0.1.100"},
                "nptv6": {"inside_prefix": "fd00:10::/48", "outside_prefix": "fd00:99::/48"},
                "delay": {"match": ["any"], "delay_ms": 1.0},
                "rewrite_payload": {"pattern": "A", "replacement": "B"}}.get(name, {})
    box = build_middlebox(name, {**required, "after_bytes": 10, "after_s": 0.5, "until_s": 9.0,
                                 "flows": "join"}, random.Random(1))
    assert isinstance(box, Triggered) and box.name == name


@pytest.mark.parametrize("params, message", [
    ({"after_byte": 1}, "unknown parameter 'after_byte' (did you mean 'after_bytes'?)"),
    ({"after_bytes": -1}, "parameter 'after_bytes': got -1, must be at least 0"),
    ({"after_s": -0.5}, "parameter 'after_s': got -0.5, must be at least 0.0"),
    ({"after_s": 2.0, "until_s": 1.0}, "parameter 'until_s': got 1.0, must be greater than "
                                       "after_s (2.0)"),
    ({"until_s": 0}, "parameter 'until_s': got 0.0, must be greater than after_s (0.0)"),
    ({"flows": "joins"}, "parameter 'flows': got 'joins', allowed: all, initial, join"),
    ({"active": "no"}, "parameter 'active': expected true or false"),
])
def test_bad_triggers_are_one_line_errors(params, message) -> None:
    with pytest.raises(MiddleboxSpecError) as error:
        build_middlebox("strip_options", params, random.Random(1))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_dss_stripped_after_data_on_the_only_subflow_falls_back_in_the_simulator() -> None:
    """The bundled stack (sans-IO) behind a box that strips DSS once 100 kB have passed: RFC
    8684 §3.7, one subflow -> infinite-mapping fallback with the stream intact. Before the
    threshold the box passed every packet, after it stripped DSS."""
    stripper = build_middlebox("strip_options", {"what": ["dss"], "after_bytes": 100_000},
                               derive_rng(1, "triggers/dss"))
    link = LinkParams(rate_mbit=10, delay_ms=5, queue_pkts=100)
    result = run_transfer(TransferSpec(paths=[PathSpec(link, middleboxes=[stripper])],
                                       size=400_000, time_limit=30.0))
    assert stripper.counters.inactive > 50 and stripper.counters.changed > 0
    assert_intact(result)
    assert result.outcome == "fallback-infinite-map"


def test_an_option_stripper_switched_on_mid_transfer_resets_that_subflow_in_the_simulator():
    """Two paths, both carrying data, when the box on path 1 starts stripping every MPTCP
    option at t = 0.5 s (what a `[[timeline]]` middlebox entry does live): RFC 8684 §3.7, the
    subflow that lost its mappings goes and the transfer completes on path 2, stream intact."""
    from testbed.sim.transfer import build_transfer, finish_transfer

    stripper = build_middlebox("strip_options", {"what": ["mptcp"], "active": False},
                               derive_rng(1, "triggers/switch"))
    link = LinkParams(rate_mbit=10, delay_ms=5, queue_pkts=100)
    setup = build_transfer(TransferSpec(paths=[PathSpec(link, middleboxes=[stripper]),
                                               PathSpec(link)], size=1_500_000, time_limit=60.0))
    seen_at_switch: list[int] = []

    def switch_on(_: object = None) -> None:
        seen_at_switch.append(stripper.counters.seen)
        stripper.set_active(True)

    setup.network.call_at(0.5, switch_on)
    result = finish_transfer(setup)
    assert seen_at_switch and seen_at_switch[0] == stripper.counters.inactive > 100
    assert stripper.counters.changed > 0
    assert_intact(result)
    assert result.bytes_on_path("path1") > 0 and result.bytes_on_path("path2") > 0
    assert result.outcome in ("mptcp", "subflow-rejected")
