"""The one jittered FIFO (the inline delay stage, the simulator's propagation): exact due times,
bounded non-reordering jitter, limits from the link as netem's, live changes."""

from __future__ import annotations

import random

import pytest

from testbed.net.delayline import DelayLine
from testbed.net.params import LinkParams, held_packets_limit


def line(delay_ms: float = 0.0, jitter_ms: float = 0.0, queue_limit: int | None = 1000,
         seed: int = 1) -> DelayLine[bytes]:
    return DelayLine(random.Random(seed), delay_ms, jitter_ms, queue_limit)


def test_frame_is_due_exactly_delay_after_arrival() -> None:
    delay = line(10.0)
    assert delay.push(b"a", now=5.0)
    assert delay.next_deadline() == pytest.approx(5.010)
    assert delay.pop_due(5.0099) == []
    assert delay.pop_due(5.010) == [b"a"]
    assert delay.next_deadline() is None


def test_zero_delay_frames_are_due_at_once_in_order() -> None:
    delay = line()
    for frame in (b"1", b"2", b"3"):
        delay.push(frame, now=1.0)
    assert delay.pop_due(1.0) == [b"1", b"2", b"3"]


def drain_due_times(delay: DelayLine) -> list[float]:
    """The due time of every queued frame, in the order the frames leave."""
    dues: list[float] = []
    while (deadline := delay.next_deadline()) is not None:
        dues += [deadline] * len(delay.pop_due(deadline))
    return dues


def test_jitter_stays_in_bounds_never_reorders_and_is_seeded() -> None:
    def run(seed: int) -> list[float]:
        delay = line(20.0, 5.0, queue_limit=5000, seed=seed)
        for i in range(2000):
            delay.push(str(i).encode(), i * 0.002)  # 2 ms apart: less than the 10 ms span
        return drain_due_times(delay)

    dues = run(7)
    assert len(dues) == 2000
    assert dues == sorted(dues), "jitter reordered frames"
    assert dues == run(7), "same seed must give the same delays"
    assert dues != run(8)
    applied = [due - i * 0.002 for i, due in enumerate(dues)]
    assert min(applied) >= 0.015 - 1e-9
    assert max(applied) <= 0.025 + 1e-9
    # The no-reorder clamp pushes the mean above the nominal 20 ms; it must stay visible.
    assert sum(applied) / len(applied) > 0.0205


def test_sparse_jitter_follows_the_uniform_distribution() -> None:
    delay = line(20.0, 5.0, seed=3)
    for i in range(4000):
        now = i * 1.0  # far apart: the no-reorder clamp never acts
        delay.push(b"x", now)
        assert delay.pop_due(now + 1.0) == [b"x"]
    stats = delay.stats.as_dict()
    assert stats["applied_mean_ms"] == pytest.approx(20.0, abs=0.2)
    assert stats["applied_min_ms"] < 15.1
    assert stats["applied_max_ms"] > 24.9


def test_full_line_drops_and_counts() -> None:
    delay = line(10.0, queue_limit=2)
    assert delay.push(b"1", 0.0)
    assert delay.push(b"2", 0.0)
    assert not delay.push(b"3", 0.0)
    assert delay.stats.dropped_queue_full == 1
    assert delay.pop_due(1.0) == [b"1", b"2"]


def test_parameter_change_keeps_queued_frames_and_their_order() -> None:
    delay = line(100.0)
    delay.push(b"old", 0.0)
    delay.configure(10.0, 0.0, 1000)
    delay.push(b"new", 0.001)  # would be due at 11 ms, but may not overtake "old"
    assert delay.pop_due(0.05) == []
    assert delay.pop_due(0.100) == [b"old", b"new"]


def test_lowering_the_limit_evicts_nothing() -> None:
    delay = line(10.0)
    for frame in (b"1", b"2", b"3"):
        delay.push(frame, 0.0)
    delay.configure(10.0, 0.0, 1)
    assert not delay.push(b"4", 0.0)
    assert delay.pop_due(1.0) == [b"1", b"2", b"3"]


def test_lateness_is_measured_from_the_due_time() -> None:
    delay = line(10.0)
    delay.push(b"1", 0.0)
    delay.pop_due(0.0125)
    assert delay.stats.late_max_ms == pytest.approx(2.5)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"delay_ms": -1}, "delay_ms must be finite and >= 0"),
    ({"jitter_ms": float("nan")}, "jitter_ms must be finite"),
    ({"delay_ms": "10"}, "delay_ms must be a number"),
    ({"delay_ms": True}, "delay_ms must be a number"),
    ({"limit": 0}, "limit must be an integer >= 1"),
    ({"limit": 2.5}, "limit must be an integer >= 1"),
])
def test_invalid_parameters_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DelayLine(random.Random(1), **kwargs)  # type: ignore[arg-type]


def test_queue_limit_is_the_queue_plus_what_is_in_flight_during_the_delay() -> None:
    # 50 Mbit/s, 600 ms: 50e6 / 8 * 0.6 / 1514 = 2476.9 full frames in flight
    long_fat = LinkParams(rate_mbit=50, delay_ms=600, queue_pkts=100)
    assert held_packets_limit(long_fat) == 100 + 2477
    # jitter counts as delay (the longest a frame is held); the default queue is the BDP's
    jittery = LinkParams(rate_mbit=100, delay_ms=10, jitter_ms=5)
    assert held_packets_limit(jittery) == jittery.effective_queue_pkts() + 124  # 123.8 in flight
    assert held_packets_limit(LinkParams()) == 1000  # no delay: the queue alone
    # the old fixed limit (1000 frames) was below the in-flight data from ~120 ms at 100 Mbit/s
    assert held_packets_limit(LinkParams(rate_mbit=100, delay_ms=130, queue_pkts=1)) > 1000


def test_a_line_for_a_long_fat_link_holds_its_in_flight_frames_and_counts_the_rest() -> None:
    params = LinkParams(rate_mbit=50, delay_ms=600, queue_pkts=100)
    delay: DelayLine[bytes] = DelayLine.for_link(params, random.Random(1))
    assert delay.limit == held_packets_limit(params) == 2577
    gap = 1514 * 8 / 50e6  # frames arriving back to back at the link's rate
    pushed = [delay.push(b"f", i * gap) for i in range(3000)]
    # what arrives within the 600 ms delay is all held (a fixed 1000-frame line dropped it)
    assert all(pushed[:2477]) and delay.stats.dropped_queue_full == 3000 - 2577
    assert len(delay) == 2577 and delay.stats.max_depth == 2577
    # the same line following a changed link takes the new limit for new frames
    delay.follow_link(params.updated({"delay_ms": 10.0, "queue_pkts": 10}))
    assert delay.limit == 10 + 42 and delay.delay_ms == 10.0


def test_jitter_keeps_order_under_bursts_and_limit_drops_are_counted_not_reordered() -> None:
    delay = line(20.0, 20.0, queue_limit=50, seed=5)
    accepted = [i for i in range(200) if delay.push(i.to_bytes(2, "big"), i * 0.0001)]
    assert accepted == list(range(50)) and delay.stats.dropped_queue_full == 150
    out = [int.from_bytes(f, "big") for f in delay.pop_due(10.0)]
    assert out == accepted
