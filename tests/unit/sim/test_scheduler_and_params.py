"""The event loop and the link parameter parser."""

from __future__ import annotations

import pytest

from testbed.errors import SpecError
from testbed.net.params import LinkParams
from testbed.sim.rng import derive_rng
from testbed.sim.scheduler import (
    STOP_CONDITION,
    STOP_DEADLINE,
    STOP_EVENT_LIMIT,
    STOP_IDLE,
    EventScheduler,
    SimulationError,
)


def test_events_run_in_time_then_scheduling_order() -> None:
    scheduler = EventScheduler()
    seen: list[tuple[float, str]] = []
    for when, label in ((2.0, "c"), (1.0, "a"), (1.0, "b"), (0.5, "first")):
        scheduler.call_at(when, lambda tag: seen.append((scheduler.now, tag)), label)
    result = scheduler.run()
    assert seen == [(0.5, "first"), (1.0, "a"), (1.0, "b"), (2.0, "c")]
    assert result.reason == STOP_IDLE and result.events == 4 and result.now == 2.0


def test_deadline_stop_advances_time_and_keeps_later_events() -> None:
    scheduler = EventScheduler()
    seen: list[float] = []
    scheduler.call_at(1.0, lambda _: seen.append(scheduler.now))
    scheduler.call_at(3.0, lambda _: seen.append(scheduler.now))
    result = scheduler.run(until=2.0)
    assert (result.reason, result.now, seen) == (STOP_DEADLINE, 2.0, [1.0])
    assert scheduler.run().reason == STOP_IDLE and seen == [1.0, 3.0]


def test_condition_and_event_limit_stop() -> None:
    scheduler = EventScheduler()
    counter = [0]

    def tick(_: object) -> None:
        counter[0] += 1
        scheduler.call_later(0.1, tick)

    scheduler.call_at(0.0, tick)
    result = scheduler.run(stop_when=lambda: counter[0] >= 5)
    assert result.reason == STOP_CONDITION and counter[0] == 5
    assert scheduler.run(max_events=3).reason == STOP_EVENT_LIMIT and counter[0] == 8


def test_past_events_are_clamped_and_negative_delay_refused() -> None:
    scheduler = EventScheduler(start=5.0)
    times: list[float] = []
    scheduler.call_at(1.0, lambda _: times.append(scheduler.now))
    scheduler.run()
    assert times == [5.0]
    with pytest.raises(SimulationError, match="delay must be >= 0"):
        scheduler.call_later(-1.0, lambda _: None)


def test_parse_link_params() -> None:
    params = LinkParams.parse("rate=100, delay=10,jitter=2,loss=1%,queue=50,queue_bytes=9000")
    assert params == LinkParams(rate_mbit=100.0, delay_ms=10.0, jitter_ms=2.0, loss_pct=1.0,
                                queue_pkts=50, queue_bytes=9000)
    assert LinkParams.parse("rate=none,queue=none") == LinkParams(rate_mbit=None, queue_pkts=None)
    assert LinkParams.parse("loss=0.2", base=params).delay_ms == 10.0
    assert LinkParams.parse("loss=0.2").loss_pct == pytest.approx(20.0)
    # the field names themselves, with their units, are the same parameters
    assert LinkParams.parse("rate_mbit=100,delay_ms=10,jitter_ms=2,loss_pct=1,queue_pkts=50,"
                            "queue_bytes=9000") == params
    assert LinkParams.parse("rate=500kbit,delay=0.25s,jitter=500us") == LinkParams(
        rate_mbit=0.5, delay_ms=250.0, jitter_ms=0.5)
    assert LinkParams.parse("rate=1gbit,delay=3ms").rate_mbit == 1000.0


@pytest.mark.parametrize(("text", "message"), [
    ("dealy=10", "unknown link parameter 'dealy'"),
    ("rate=fast", "rate=.fast."),
    ("loss=1.5", "loss must be a fraction"),
    ("rate=-3", "rate_mbit=-3.0: must be > 0"),
    ("delay", "is not key=value"),
    ("queue=0", "queue_pkts=0: must be an integer >= 1"),
    ("loss_pct=101", "loss_pct=101.0: must be between 0 and 100"),
    ("reorder=maybe", "reorder=.maybe."),
    ("delay=10min", "unknown unit; use ms or one of us, ms, s"),
    ("rate=10mbps", "unknown unit; use mbit"),
])
def test_bad_link_params_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        LinkParams.parse(text)


def test_updated_refuses_unknown_fields() -> None:
    with pytest.raises(SpecError, match="unknown link parameter 'delay'"):
        LinkParams().updated({"delay": 3})


def test_component_streams_are_independent_and_reproducible() -> None:
    stream, again = derive_rng(1, "link/a"), derive_rng(1, "link/a")
    first = [stream.random() for _ in range(3)]
    assert first == [again.random() for _ in range(3)]
    assert len(set(first)) == 3
    assert derive_rng(1, "link/a").random() != derive_rng(1, "link/b").random()
    assert derive_rng(1, "link/a").random() != derive_rng(2, "link/a").random()
