"""The one middlebox chain: path order per direction, continuing after a box, lazy releases."""

from __future__ import annotations

from middleboxes.chain import MiddleboxChain
from middleboxes.contract import Direction
from tests.unit.inline.frames import tcp_packet
from tests.unit.inline.test_pipeline import Box

UP, DOWN = Direction.UPSTREAM, Direction.DOWNSTREAM


def test_upstream_in_list_order_downstream_reversed_and_after_a_box() -> None:
    log: list[tuple[str, Direction]] = []
    chain = MiddleboxChain([Box("a", log), Box("b", log), Box("c", log)])
    assert len(chain.run([tcp_packet()], UP, 0.0)) == 1
    assert len(chain.run([tcp_packet()], DOWN, 0.0)) == 1
    assert [name for name, _ in log] == ["a", "b", "c", "c", "b", "a"]
    log.clear()
    chain.run([tcp_packet()], UP, 0.0, after=0)
    chain.run([tcp_packet()], DOWN, 0.0, after=2)
    chain.run([tcp_packet()], DOWN, 0.0, after=0)  # nothing after the client-side box
    assert [name for name, _ in log] == ["b", "c", "b", "a"]


def test_a_held_packet_comes_back_from_its_box_and_goes_on_with_the_rest() -> None:
    log: list[tuple[str, Direction]] = []
    chain = MiddleboxChain([Box("a", log), Box("hold", log, action="hold", hold_s=0.5),
                            Box("c", log)])
    assert chain.run([tcp_packet()], UP, 1.0) == []
    assert chain.next_deadline() == 1.5
    assert list(chain.release_due(1.4)) == []
    released = list(chain.release_due(1.5))
    assert [(index, direction) for index, _, direction in released] == [(1, UP)]
    _, packet, _ = released[0]
    assert chain.run([packet], UP, 1.5, after=1) == [packet]
    assert [name for name, _ in log] == ["a", "hold", "c"]
    assert chain.next_deadline() is None


def test_the_inline_pipeline_and_the_simulator_run_this_chain() -> None:
    from testbed.inline.pipeline import MiddleboxPipeline, wire_codec
    from testbed.sim.chain import ScheduledChain
    from testbed.sim.scheduler import EventScheduler

    boxes = [Box("a"), Box("b")]
    pipeline = MiddleboxPipeline(boxes, wire_codec())
    scheduled = ScheduledChain(boxes, EventScheduler(), lambda packet, direction: None)
    assert isinstance(pipeline.chain, MiddleboxChain)
    assert isinstance(scheduled.chain, MiddleboxChain)
    assert scheduled.chain.boxes == pipeline.chain.boxes == boxes
