"""The progress bar: exact ETA under an injected clock, log-friendly output without a TTY."""

from __future__ import annotations

import io

import pytest

from testbed.progress import ProgressBar, format_duration


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_eta_is_mean_time_per_unit_times_units_left() -> None:
    clock, stream = FakeClock(), io.StringIO()
    bar = ProgressBar(4, label="matrix", stream=stream, clock=clock, tty=False)
    assert bar.eta_s() is None
    clock.now += 10
    bar.advance()
    assert bar.eta_s() == pytest.approx(30.0)
    clock.now += 30  # the second step was slower: the mean moves
    bar.advance()
    assert bar.eta_s() == pytest.approx(40.0)
    assert "2/4" in stream.getvalue().splitlines()[-1]
    assert "ETA 0:40" in stream.getvalue().splitlines()[-1]


def test_without_tty_one_line_per_step_and_status_is_silent() -> None:
    clock, stream = FakeClock(), io.StringIO()
    bar = ProgressBar(3, stream=stream, clock=clock, tty=False)
    bar.status("cell a: building")
    assert stream.getvalue() == ""
    bar.advance(note="cell a: mptcp")
    bar.advance(note="cell b: reset")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in stream.getvalue()
    assert lines[0].endswith("cell a: mptcp") and lines[1].endswith("cell b: reset")
    bar.finish("done")
    assert stream.getvalue().splitlines()[-1] == "done"


def test_tty_redraws_in_place_and_finish_ends_the_line() -> None:
    stream = io.StringIO()
    bar = ProgressBar(2, stream=stream, clock=FakeClock(), tty=True)
    bar.status("running")
    bar.advance()
    text = stream.getvalue()
    assert text.count("\r\x1b[2K") == 2 and "\n" not in text
    bar.finish()
    assert stream.getvalue().endswith("\n")
    bar.finish()  # idempotent: an interrupt path may call it again
    assert stream.getvalue().count("\n") == 1


def test_weighted_units_and_bar_full_at_the_end() -> None:
    clock, stream = FakeClock(), io.StringIO()
    bar = ProgressBar(10.0, stream=stream, clock=clock, tty=False, width=10)
    clock.now += 5
    bar.advance(2.5)
    assert bar.eta_s() == pytest.approx(15.0)
    bar.advance(7.5)
    assert "##########" in stream.getvalue().splitlines()[-1]
    assert "100%" in stream.getvalue().splitlines()[-1]


def test_broken_stream_does_not_abort_the_run() -> None:
    stream = io.StringIO()
    stream.close()
    bar = ProgressBar(1, stream=stream, clock=FakeClock(), tty=False)
    bar.advance()
    bar.finish("x")


def test_total_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        ProgressBar(0)


@pytest.mark.parametrize(("seconds", "text"), [(None, "--:--"), (-1, "--:--"), (0, "0:00"), (65, "1:05"),
                                               (3723, "1:02:03")])
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_free_steps_do_not_make_the_eta_optimistic() -> None:
    clock, stream = FakeClock(), io.StringIO()
    bar = ProgressBar(4, stream=stream, clock=clock, tty=False)
    bar.advance(free=True)  # a reused result: instant
    bar.advance(free=True)
    assert bar.eta_s() is None
    clock.now += 20
    bar.advance()
    assert bar.eta_s() == pytest.approx(20.0)  # 20 s per real step, one left
    bar.advance()
    assert bar.eta_s() == 0.0
