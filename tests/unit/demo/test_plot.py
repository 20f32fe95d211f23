"""The PNG is drawn from time-series rows alone; the smoothing keeps the bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.demo.phases import Phase, check_phase
from testbed.demo.plot import smoothed_series, write_phase_plot
from tests.unit.demo.samples import PATHS, rows_for


def test_smoothing_averages_bins_per_path() -> None:
    rows = rows_for(1, {"a": 40, "b": 60}) + rows_for(1, {"a": 80, "b": 20}, start=1.0)
    series = smoothed_series(rows, PATHS, 0.1, 0.5)
    times, a = series["a"]
    assert times == pytest.approx([0.25, 0.75, 1.25, 1.75])
    assert a == pytest.approx([40, 40, 80, 80])
    assert series["b"][1] == pytest.approx([60, 60, 20, 20])


def test_phase_plot_is_a_png(tmp_path: Path) -> None:
    rows = rows_for(2, {"a": 90, "b": 90}) + rows_for(2, {"a": 10, "b": 90}, start=2.0)
    phases = [Phase("clean", "clean", 0, 2, 0.5), Phase("loss-a", "loss on a", 2, 2, 0.5, (),
                                                          {"share_min": {"b": 0.7}})]
    summaries = [check_phase(phases[0], {"a": 90.0, "b": 90.0}),
                 check_phase(phases[1], {"a": 10.0, "b": 90.0})]
    png = tmp_path / "demo.png"
    write_phase_plot(png, rows, PATHS, 0.1, summaries, "test")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
