"""A baseline from several runs: medians, and tolerances from the runs' own spread."""

from __future__ import annotations

from typing import Any

import pytest

from testbed.bench.baseline import merge, tolerance_from_spread


def _run(**values: float) -> dict[str, Any]:
    figures = {name: {"value": value, "unit": "x", "reference": "r", "rounds": [value],
                      "better": "lower" if name == "delay" else "higher", "gated": True,
                      "tolerance": 0.5, "limit": 1.0 if name == "delay" else None,
                      "detail": {"aggregate": "best round"}}
               for name, value in values.items()}
    return {"schema": "testbed-bench", "version": 1, "quick": True,
            "machine": {"load_average_before": 1.0}, "figures": figures}


def test_tolerance_is_the_worst_pair_of_runs_with_a_margin_capped() -> None:
    assert tolerance_from_spread([0.95, 1.0, 1.05], ceiling=0.9) == 0.75  # 0.85 x 0.905 = 0.769
    assert tolerance_from_spread([1.0, 1.0], ceiling=0.7) == 0.7


def test_merge_takes_medians_keeps_every_run_and_ungates_figures_noise_could_halve() -> None:
    runs = [_run(steady=1.0, noisy=1.0, delay=0.2, free=3.0),
            _run(steady=1.04, noisy=2.5, delay=0.6, free=3.0),
            _run(steady=0.98, noisy=0.8, delay=0.3, free=3.0)]
    doc = merge(runs, {"steady": 0.7, "noisy": 0.7, "delay": 0.5})
    steady, noisy, delay = (doc["figures"][name] for name in ("steady", "noisy", "delay"))
    assert steady["value"] == 1.0 and steady["rounds"] == [1.0, 1.04, 0.98]
    assert steady["gated"] and steady["tolerance"] == 0.7
    assert not noisy["gated"] and "could not tell a halved figure" in noisy["detail"]["not_gated_because"]
    assert delay["gated"] and delay["tolerance"] == 0.25  # its 1 ms limit still passes it
    assert not doc["figures"]["free"]["gated"]  # no ceiling: recorded only
    assert doc["runs"] == 3 and doc["machine"]["load_average_of_runs"] == [1.0, 1.0, 1.0]


def test_merge_refuses_mixed_modes() -> None:
    quick, full = _run(a=1.0), {**_run(a=1.0), "quick": False}
    with pytest.raises(ValueError, match="all quick or all full"):
        merge([quick, full], {})
