"""Points 6 and 7 without a network: repeat seeds and intervals, unstable cells, compare on
intervals and distributions, the degraded axis, and "OUTCOME · INTEGRITY" expectations."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest

from testbed.compare import Entry, compare_entry, group_repeats
from testbed.errors import SpecError
from testbed.matrix import expectation_met, parse_expectation, parse_matrix_spec, run_matrix
from testbed.performance import likely_cause, mark_degraded
from testbed.repeats import class_of, median_interval, repeat_seed, summarize_repeats
from tests.unit.report.test_matrix import SPEC, FakeRunner


def test_median_interval_uses_order_statistics() -> None:
    found = median_interval([float(v) for v in range(10, 0, -1)])
    assert (found.median, found.low, found.high) == (5.5, 2.0, 9.0)
    assert found.confidence == pytest.approx(1 - 2 * 11 / 1024)
    few = median_interval([3.0, 1.0, 2.0])
    assert (few.median, few.low, few.high, few.confidence) == (2.0, 1.0, 3.0, 0.75)


def test_repeat_seeds_keep_the_first_and_differ_after() -> None:
    seeds = [repeat_seed(1, i) for i in range(5)]
    assert seeds[0] == 1 and len(set(seeds)) == 5 and all(0 <= s < 2 ** 63 for s in seeds)


def test_summary_of_repeats_is_unstable_with_its_distribution() -> None:
    records = [{"outcome": "fallback-infinite-map", "integrity": "corrupted", "goodput_mbps": 50.0},
               {"outcome": "fallback-infinite-map", "integrity": "corrupted", "goodput_mbps": 52.0},
               {"outcome": "fallback-infinite-map", "integrity": "ok", "goodput_mbps": 90.0}]
    summary = summarize_repeats(records)
    assert summary["stable"] is False
    assert summary["distribution"] == {"fallback-infinite-map \u00b7 corrupted": 2,
                                       "fallback-infinite-map": 1}
    assert summary["goodput"]["median"] == 52.0


def entry(key: str, classes: list[str], goodputs: list[float]) -> Entry:
    single = len(set(classes)) == 1
    return Entry(key, "ok", classes[0] if single else "unstable", sorted(goodputs)[len(goodputs) // 2],
                 "", tuple(classes), tuple(goodputs))


def test_compare_regression_only_when_intervals_separate() -> None:
    base = entry("k", ["mptcp"] * 5, [100, 101, 99, 100, 102])
    slower = entry("k", ["mptcp"] * 5, [60, 61, 59, 62, 60])
    assert compare_entry("k", base, slower, 10.0, 0.5, False).verdict == "regression"
    # a median 30 % lower, but one repeat as fast as the baseline: the intervals overlap
    noisy = entry("k", ["mptcp"] * 5, [70, 71, 69, 100, 72])
    diff = compare_entry("k", base, noisy, 10.0, 0.5, False)
    assert diff.verdict == "same" and "intervals overlap" in diff.what


def test_compare_distributions_not_single_draws() -> None:
    base = entry("k", ["mptcp", "mptcp", "stalled"], [90, 91, 0])
    same_classes = entry("k", ["stalled", "mptcp", "mptcp"], [0, 90, 92])
    assert compare_entry("k", base, same_classes, 10.0, 0.5, False).verdict == "same"
    new_class = entry("k", ["mptcp", "mptcp", "mptcp \u00b7 corrupted"], [90, 91, 90])
    diff = compare_entry("k", base, new_class, 10.0, 0.5, False)
    assert diff.regression and "classes" in diff.what


def test_runs_in_repeat_directories_group_into_one_entry() -> None:
    entries = {f"spec/repeat-{i}": Entry(f"spec/repeat-{i}", "ok", c, g)
               for i, (c, g) in enumerate([("mptcp", 90.0), ("mptcp", 95.0), ("reset", 0.0)])}
    grouped = group_repeats({**entries, "other": Entry("other", "ok", "mptcp", 10.0)})
    assert set(grouped) == {"spec", "other"}
    assert grouped["spec"].outcome == "unstable" and grouped["spec"].goodput_mbps == 90.0
    assert grouped["spec"].distribution == {"mptcp": 2, "reset": 1}


def test_degraded_cells_name_a_likely_cause() -> None:
    """Against the reference's goodput per subflow times the paths the cell could use."""
    perf = {"retrans_share": 0.0, "rtos": 0, "idle_subflows": [], "subflows": 2, "expected_subflows": 2}
    cells: list[dict[str, Any]] = [
        {"row": "none", "pairing": "kernel-kernel", "status": "ok", "goodput_mbps": 188.0,
         "subflows_carrying": 2},
        {"row": "seq", "pairing": "kernel-kernel", "status": "ok", "goodput_mbps": 2.5, "outcome": "mptcp",
         "integrity": "ok", "performance": {**perf, "retrans_share": 0.31, "rtos": 12}},
        {"row": "fine", "pairing": "kernel-kernel", "status": "ok", "goodput_mbps": 150.0,
         "outcome": "mptcp", "integrity": "ok", "performance": perf},
        # a fallback uses one path: 90 of the reference's 94 per path is fine
        {"row": "fallback", "pairing": "kernel-kernel", "status": "ok", "goodput_mbps": 90.0,
         "outcome": "fallback-syn", "integrity": "ok", "performance": perf},
        # a broken transfer keeps its fraction; its classes already say what went wrong
        {"row": "broken", "pairing": "kernel-kernel", "status": "ok", "goodput_mbps": 1.0,
         "outcome": "reset", "integrity": "truncated", "performance": perf},
        {"row": "seq", "pairing": "python-kernel", "status": "ok", "goodput_mbps": 1.0},  # no reference
    ]
    mark_degraded(cells, "none", 0.5)
    assert cells[1]["goodput_fraction"] == pytest.approx(2.5 / 188, abs=1e-4)
    assert cells[1]["degraded"] == ("12 retransmission timeout(s) (TcpExtTCPTimeouts); "
                                    "31% of the bytes sent were retransmissions")
    assert "degraded" not in cells[2] and cells[2]["goodput_fraction"] == pytest.approx(0.7979, abs=1e-4)
    assert "degraded" not in cells[3] and cells[3]["goodput_fraction"] == pytest.approx(90 / 94, abs=1e-4)
    assert "degraded" not in cells[4] and cells[4]["goodput_fraction"] < 0.01
    assert "degraded" not in cells[5] and "goodput_fraction" not in cells[5]
    assert likely_cause({"idle_subflows": ["a->b"]}) == "idle subflow(s): a->b"


def test_expectations_on_both_axes() -> None:
    assert parse_expectation("mp-fail \u00b7 alg-edited", "w") == [("mp-fail", "alg-edited")]
    assert parse_expectation("mptcp", "w") == [("mptcp", None)]
    varies = "fallback-infinite-map | reset \u00b7 corrupted"
    assert parse_expectation(varies, "w") == [("fallback-infinite-map", None), ("reset", "corrupted")]
    assert expectation_met(varies, "reset", "corrupted")
    assert expectation_met(varies, "fallback-infinite-map", "ok")
    assert not expectation_met(varies, "fallback-infinite-map", "corrupted")
    with pytest.raises(SpecError, match="corrupted is an integrity class"):
        parse_expectation("corrupted", "w")
    with pytest.raises(SpecError, match="integrity 'mangled'"):
        parse_expectation("mptcp \u00b7 mangled", "w")
    assert expectation_met("mp-fail \u00b7 alg-edited", "mp-fail", "alg-edited")
    assert not expectation_met("mp-fail \u00b7 alg-edited", "mp-fail", "corrupted")
    # an outcome alone never accepts corrupted bytes; truncated only for a broken transfer
    assert not expectation_met("mptcp", "mptcp", "corrupted")
    assert expectation_met("stalled", "stalled", "truncated")
    assert not expectation_met("mptcp", "mptcp", "truncated")
    assert class_of("mptcp", "ok") == "mptcp" and class_of("mp-fail", "alg-edited") == \
        "mp-fail \u00b7 alg-edited"


def test_matrix_repeat_runs_every_cell_with_derived_seeds(tmp_path: Path) -> None:
    matrix = parse_matrix_spec(copy.deepcopy(SPEC), source="m.toml")
    matrix = type(matrix)(**{**matrix.__dict__, "repeat": 3})
    runner = FakeRunner({"none": "mptcp", "strip_syn": "fallback-syn"})
    seeds: list[int] = []
    original = runner.__call__

    def recording(spec, out_dir, *, progress):
        seeds.append(spec.seed)
        return original(spec, out_dir, progress=progress)

    doc = run_matrix(matrix, tmp_path, runner=recording, stream=io.StringIO(), tty=False)
    assert len(seeds) == 12 and len(set(seeds)) == 3 and seeds[0] == 1
    cell = next(c for c in doc["cells"] if (c["row"], c["pairing"]) == ("none", "kernel-kernel"))
    assert cell["stable"] is True and cell["distribution"] == {"mptcp": 3}
    assert [r["dir"] for r in cell["repeats"]] == [f"cells/none/kernel-kernel/repeat-{i}" for i in range(3)]
    assert all((tmp_path / r["dir"] / "result.json").exists() for r in cell["repeats"])
    assert doc["repeat"] == 3 and doc["summary"]["unstable"] == 0
    assert json.loads((tmp_path / "matrix.json").read_text())["cells"] == doc["cells"]


def test_matrix_spec_reference_and_threshold_are_checked() -> None:
    raw = copy.deepcopy(SPEC)
    raw["degraded_below"] = 0.3
    matrix = parse_matrix_spec(raw, source="m.toml")
    assert (matrix.reference, matrix.degraded_below) == ("none", 0.3)
    raw["reference"] = "nope"
    with pytest.raises(SpecError, match="reference 'nope' is not a row name"):
        parse_matrix_spec(raw, source="m.toml")
    raw["reference"], raw["degraded_below"] = "none", 5
    with pytest.raises(SpecError, match="degraded_below must be a fraction"):
        parse_matrix_spec(raw, source="m.toml")
