"""The delay line: exact due times, bounded non-reordering jitter, limits, live changes."""

from __future__ import annotations

import random

import pytest

from testbed.inline.delay import DelayLine, DelayParams


def line(delay_ms: float = 0.0, jitter_ms: float = 0.0, queue_limit: int = 1000,
         seed: int = 1) -> DelayLine:
    return DelayLine(DelayParams(delay_ms, jitter_ms, queue_limit), random.Random(seed))


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
    delay.set_params(DelayParams(delay_ms=10.0))
    delay.push(b"new", 0.001)  # would be due at 11 ms, but may not overtake "old"
    assert delay.pop_due(0.05) == []
    assert delay.pop_due(0.100) == [b"old", b"new"]


def test_lowering_the_limit_evicts_nothing() -> None:
    delay = line(10.0)
    for frame in (b"1", b"2", b"3"):
        delay.push(frame, 0.0)
    delay.set_params(DelayParams(delay_ms=10.0, queue_limit=1))
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
    ({"queue_limit": 0}, "queue_limit must be an integer >= 1"),
    ({"queue_limit": 2.5}, "queue_limit must be an integer >= 1"),
])
def test_invalid_parameters_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DelayParams(**kwargs)  # type: ignore[arg-type]
