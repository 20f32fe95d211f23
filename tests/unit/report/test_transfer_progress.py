"""`testbed run`'s transfer bar: the ETA from the spec's plan (seconds, timeline, bytes), exact
under an injected clock, and a log-friendly rhythm without a TTY."""

from __future__ import annotations

import io

import pytest

from testbed.progress import ProgressBar, TransferProgress, format_bytes


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def last_line(stream: io.StringIO) -> str:
    return stream.getvalue().splitlines()[-1]


def test_a_timed_run_ends_at_its_planned_seconds() -> None:
    clock, stream = FakeClock(), io.StringIO()
    run = TransferProgress(seconds=10, total_bytes=None, label="two_path", stream=stream,
                           clock=clock, tty=False)
    clock.now += 4
    run.tick(4.0, 50_000_000)
    line = last_line(stream)
    assert line.startswith("[two_path] ")
    assert "4/10 s" in line and "ETA 0:06" in line and "elapsed 0:04" in line
    assert "50 MB through, 100.0 Mbit/s" in line
    assert run.bar.eta_s() == pytest.approx(6.0)


def test_a_later_timeline_event_extends_the_plan() -> None:
    clock, stream = FakeClock(), io.StringIO()
    run = TransferProgress(seconds=10, total_bytes=None, timeline_end_s=25.0, stream=stream,
                           clock=clock, tty=False)
    clock.now += 5
    run.tick(5.0, 1000)
    assert run.bar.total == 25.0 and run.bar.eta_s() == pytest.approx(20.0)
    assert "5/25 s" in last_line(stream)


def test_a_sized_run_estimates_from_the_rate_so_far() -> None:
    clock, stream = FakeClock(), io.StringIO()
    run = TransferProgress(seconds=None, total_bytes=20_000_000, stream=stream, clock=clock, tty=False)
    clock.now += 1
    run.tick(1.0, 0)
    assert run.bar.eta_s() is None  # nothing through yet: no rate, no guess
    assert "ETA --:--" in run.bar.line() and stream.getvalue() == ""  # no tenth done, no line yet
    clock.now += 1
    run.tick(2.0, 5_000_000)  # a quarter in 2 s: 6 s left
    assert run.bar.eta_s() == pytest.approx(6.0)
    assert "5 MB/20 MB" in last_line(stream) and "ETA 0:06" in last_line(stream)


def test_without_a_tty_a_line_per_tenth_and_a_heartbeat_when_stalled() -> None:
    clock, stream = FakeClock(), io.StringIO()
    run = TransferProgress(seconds=None, total_bytes=1000, stream=stream, clock=clock, tty=False)
    for step in range(1, 41):  # 40 ticks of 25 bytes: ten tenths, ten lines
        clock.now += 0.25
        run.tick(step * 0.25, step * 25)
    assert len(stream.getvalue().splitlines()) == 10
    assert "\r" not in stream.getvalue()
    stalled = TransferProgress(seconds=None, total_bytes=1000, stream=(log := io.StringIO()),
                               clock=clock, tty=False)
    for step in range(1, 101):  # 25 s with nothing through: one line per LOG_EVERY_S
        clock.now += 0.25
        stalled.tick(step * 0.25, 0)
    assert len(log.getvalue().splitlines()) == int(25 // ProgressBar.LOG_EVERY_S)


def test_a_tty_redraws_in_place_at_most_five_times_a_second() -> None:
    clock, stream = FakeClock(), io.StringIO()
    run = TransferProgress(seconds=2, total_bytes=None, stream=stream, clock=clock, tty=True)
    for step in range(1, 21):  # 2 s of ticks every 0.1 s
        clock.now += 0.1
        run.tick(step * 0.1, step * 1000)
    text = stream.getvalue()
    assert "\n" not in text and 9 <= text.count("\r\x1b[2K") <= 11
    run.finish()
    assert stream.getvalue().endswith("\n")


def test_plan_needs_exactly_one_of_seconds_and_bytes() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        TransferProgress(seconds=None, total_bytes=None)
    with pytest.raises(ValueError, match="exactly one"):
        TransferProgress(seconds=1, total_bytes=1)


@pytest.mark.parametrize(("count", "text"), [(950, "950 B"), (4_200_000, "4.2 MB"),
                                             (20_000_000, "20 MB"), (1_050_000_000, "1.05 GB"),
                                             (250_000_000, "250 MB")])
def test_format_bytes(count: int, text: str) -> None:
    assert format_bytes(count) == text


def test_a_burst_written_sample_counts_from_its_own_time() -> None:
    """The samples file arrives in bursts: 5 MB as of t=2 s, read at t=4 s, is 2.5 MB/s, so the
    15 MB left need 6 s from t=2 s: 4 s from now (not 9 s, as 5 MB in 4 s would suggest)."""
    clock, stream = FakeClock(), io.StringIO()
    run = TransferProgress(seconds=None, total_bytes=20_000_000, stream=stream, clock=clock, tty=False)
    clock.now += 4
    run.tick(4.0, 5_000_000, sampled_at_s=2.0)
    assert run.bar.eta_s() == pytest.approx(4.0)
    assert "5 MB through, 20.0 Mbit/s" in last_line(stream) and "ETA 0:04" in last_line(stream)
    clock.now += 10
    run.tick(14.0, 5_000_000, sampled_at_s=2.0)  # overdue by the old rate: never negative
    assert run.bar.eta_s() == 0.0
