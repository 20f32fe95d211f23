"""The gate's verdicts from two benchmark documents (no measurement: the documents are data)."""

from __future__ import annotations

from typing import Any

from testbed.bench import gate


def _figure(value: float, *, better: str = "higher", tolerance: float = 0.7, gated: bool = True,
            limit: float | None = None) -> dict[str, Any]:
    return {"value": value, "unit": "x", "reference": "r", "rounds": [value], "better": better,
            "gated": gated, "tolerance": tolerance, "limit": limit, "detail": {}}


def _doc(**figures: dict[str, Any]) -> dict[str, Any]:
    return {"figures": figures}


def test_a_fast_path_at_half_speed_fails_and_within_tolerance_passes() -> None:
    baseline = _doc(fast=_figure(4.0), steady=_figure(2.0))
    rows = {row.name: row for row in gate.compare(baseline, _doc(fast=_figure(2.0),
                                                                 steady=_figure(1.5)))}
    assert rows["fast"].verdict == "FAIL" and rows["fast"].ratio == 0.5
    assert rows["steady"].verdict == "PASS" and rows["steady"].ratio == 0.75
    assert [row.name for row in gate.failed(list(rows.values()))] == ["fast"]


def test_lower_is_better_figures_invert_the_ratio_and_pass_under_their_limit() -> None:
    baseline = _doc(delay=_figure(0.4, better="lower", tolerance=0.5, limit=1.0),
                    wall=_figure(10.0, better="lower", tolerance=0.67))
    rows = {row.name: row for row in gate.compare(
        baseline, _doc(delay=_figure(0.9, better="lower"), wall=_figure(16.0, better="lower")))}
    assert rows["delay"].verdict == "PASS"  # ratio 0.44 < 0.5, but 0.9 ms is under the 1 ms limit
    assert rows["wall"].verdict == "FAIL" and rows["wall"].ratio == 10.0 / 16.0
    rows = {row.name: row for row in gate.compare(
        baseline, _doc(delay=_figure(1.2, better="lower"), wall=_figure(9.0, better="lower")))}
    assert rows["delay"].verdict == "FAIL" and rows["wall"].verdict == "PASS"


def test_a_gated_figure_that_was_not_measured_fails_an_ungated_one_is_information() -> None:
    baseline = _doc(gone=_figure(1.0), noted=_figure(1.0, gated=False))
    rows = gate.compare(baseline, _doc(noted=_figure(0.1)))
    assert [(row.name, row.verdict) for row in rows] == [("gone", "MISSING"), ("noted", "info")]
    assert [row.name for row in gate.failed(rows)] == ["gone"]


def test_the_table_names_every_figure_with_its_verdict() -> None:
    rows = gate.compare(_doc(a=_figure(2.0)), _doc(a=_figure(1.0)))
    table = gate.format_table(rows)
    header, line = table.splitlines()
    assert header.split() == ["figure", "baseline", "now", "ratio", "tolerance", "verdict"]
    assert line.split() == ["a", "2", "1", "0.500", ">=", "0.70", "FAIL"]
