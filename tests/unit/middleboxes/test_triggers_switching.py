"""Switching a middlebox from the timeline: the spec grammar, the runner's plan (which boxes are
built switchable), the inline config and control op, and the pipeline that switches the box."""

from __future__ import annotations

import json
import random

import pytest

from testbed.errors import SpecError
from testbed.inline.app import build_registered_middleboxes
from testbed.inline.commands import handle_line
from testbed.inline.config import ConfigError, parse_config
from testbed.inline.pipeline import MiddleboxPipeline, wire_codec
from testbed.matrix import parse_matrix_spec
from testbed.net.shaping import Backends
from testbed.runner import plan_bumps
from testbed.spec import parse_spec
from tests.unit.inline.frames import tcp_frame, tcp_packet
from topologies import build_topology

BOXES = [{"node": "mb_a", "type": "drop", "params": {"match": ["data"], "active": False}},
         {"node": "mb_a", "type": "strip_options"},
         {"node": "mb_b", "type": "rewrite_seq"}]


def spec_with(timeline: list[dict], middleboxes: list[dict] | None = None):
    return parse_spec({
        "topology": {"name": "two_path"},
        "endpoints": [{"role": "server", "stack": "kernel"}, {"role": "client", "stack": "kernel"}],
        "traffic": {"bytes": 1000},
        "middleboxes": BOXES if middleboxes is None else middleboxes,
        "timeline": timeline,
    })


def test_middlebox_entries_name_a_node_and_index_and_sort_with_link_entries() -> None:
    spec = spec_with([{"at_s": 3, "middlebox": "mb_a.0", "active": True},
                      {"at_s": 1, "link": "a", "set": {"delay_ms": 5}},
                      {"at_s": 2, "middlebox": "mb_b", "active": False}])
    assert [(e.at_s, e.link, e.middlebox, e.active) for e in spec.timeline] == [
        (1.0, "a", "", None), (2.0, "", "mb_b.0", False), (3.0, "", "mb_a.0", True)]
    assert spec.timeline[2].middlebox_slot == ("mb_a", 0)


@pytest.mark.parametrize("entry, message", [
    ({"at_s": 1, "middlebox": "mb_a", "active": True}, "node 'mb_a' has 2 middleboxes; name one"),
    ({"at_s": 1, "middlebox": "mb_a.2", "active": True}, "the index must be 0..1"),
    ({"at_s": 1, "middlebox": "mb_a.x", "active": True}, "the index must be 0..1"),
    ({"at_s": 1, "middlebox": "mb_c.0", "active": True}, "no middlebox on node 'mb_c'"),
    ({"at_s": 1, "middlebox": "mb_b"}, "needs `active = true` or `active = false`"),
    ({"at_s": 1, "middlebox": "mb_b", "active": True, "up": False}, "takes only at_s"),
    ({"at_s": 1, "link": "a", "active": True}, "`active` switches a middlebox"),
    ({"at_s": 1, "active": True}, "needs `link"),
    ({"at_s": -1, "middlebox": "mb_b", "active": True}, "at_s must be >= 0"),
    ({"at_s": 1, "middlebox": "mb_b", "active": 1}, "expected true/false"),
])
def test_bad_middlebox_entries_are_one_line_errors(entry, message) -> None:
    with pytest.raises(SpecError) as error:
        spec_with([entry])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_plan_builds_only_the_named_boxes_switchable() -> None:
    spec = spec_with([{"at_s": 1, "middlebox": "mb_a.1", "active": False}])
    bumps = plan_bumps(spec, build_topology("two_path"), Backends(rate="htb", loss="netem", delay="netem"))
    assert [b.get("switchable", False) for b in bumps["mb_a"].middleboxes] == [False, True]
    assert "switchable" not in bumps["mb_b"].middleboxes[0]


def test_the_inline_process_switches_a_box_through_the_control_op() -> None:
    config = parse_config({"middleboxes": [
        {"name": "drop", "params": {"match": ["data"], "active": False}},
        {"name": "strip_options", "switchable": True},
        {"name": "rewrite_seq"}]})
    boxes = build_registered_middleboxes(config.middleboxes, random.Random(1))
    pipeline = MiddleboxPipeline(boxes, wire_codec())

    class Target:  # what the runtime forwards to its pipeline
        def set_middlebox_active(self, index: int, active: bool) -> dict[str, int]:
            return pipeline.set_middlebox_active(index, active)

    from middleboxes.contract import Direction
    frame = tcp_frame(tcp_packet(payload=b"data"))
    assert pipeline.process(frame, Direction.UPSTREAM, 0.0)  # the drop box is off: passes
    reply = handle_line(json.dumps({"op": "set_middlebox", "index": 0, "active": True}).encode(),
                        Target())
    assert reply["ok"] and reply["counters"]["inactive"] == 1 and reply["counters"]["seen"] == 1
    assert pipeline.process(frame, Direction.UPSTREAM, 0.1) == []  # now it drops
    for request, message in [({"index": 2, "active": True}, "not configured switchable"),
                             ({"index": 5, "active": True}, "no middlebox 5"),
                             ({"index": 0, "active": "on"}, "'active' must be true or false"),
                             ({"index": 0}, "'active' must be true or false")]:
        reply = handle_line(json.dumps({"op": "set_middlebox", **request}).encode(), Target())
        assert not reply["ok"] and message in reply["error"]
    with pytest.raises(ConfigError, match="switchable must be true or false"):
        parse_config({"middleboxes": [{"name": "nat", "switchable": "yes"}]})


def test_a_matrix_row_may_add_a_timeline_to_the_base() -> None:
    matrix = parse_matrix_spec({
        "pairings": ["kernel-kernel"],
        "base": {"topology": {"name": "two_path"}, "traffic": {"bytes": 1000},
                 "timeline": [{"at_s": 1.0, "link": "b", "set": {"delay_ms": 5}}]},
        "middleboxes": [{"name": "late", "node": "mb_a", "type": "strip_options",
                         "params": {"active": False},
                         "timeline": [{"at_s": 2.0, "middlebox": "mb_a.0", "active": True}]},
                        {"name": "plain", "chain": []}]})
    late, plain = (cell.spec for cell in matrix.cells)
    assert [(e.link, e.middlebox) for e in late.timeline] == [("b", ""), ("", "mb_a.0")]
    assert [(e.link, e.middlebox) for e in plain.timeline] == [("b", "")]
