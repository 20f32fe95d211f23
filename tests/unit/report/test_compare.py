"""compare: exact outcome classes, goodput within the tolerance, exit codes and JUnit XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from testbed.compare import Entry, compare, compare_entry, junit_xml, load_entries, main


def ok(key: str, outcome: str = "mptcp", goodput: float = 100.0) -> Entry:
    return Entry(key, "ok", outcome, goodput)


@pytest.mark.parametrize(("current", "verdict"), [
    (90.1, "same"),        # -9.9% within 10%
    (89.0, "regression"),  # -11%
    (110.0, "same"),
    (111.0, "faster"),     # reported, not a failure by default
])
def test_goodput_tolerance(current: float, verdict: str) -> None:
    diff = compare_entry("k", ok("k"), ok("k", goodput=current), 10.0, 0.5, False)
    assert diff.verdict == verdict


def test_faster_fails_only_when_asked() -> None:
    assert compare_entry("k", ok("k"), ok("k", goodput=150), 10.0, 0.5, True).regression


def test_floor_keeps_near_zero_goodputs_from_failing_on_noise() -> None:
    near_zero = compare_entry("k", ok("k", "reset", 0.2), ok("k", "reset", 0.0), 10.0, 0.5, False)
    assert near_zero.verdict == "same"
    assert compare_entry("k", ok("k", "reset", 0.2), ok("k", "reset", 0.0), 10.0, 0.0, False).regression


def test_outcome_must_match_exactly_even_when_goodput_is_equal() -> None:
    diff = compare_entry("k", ok("k", "mptcp"), ok("k", "fallback-syn"), 10.0, 0.5, False)
    assert diff.regression and diff.what == "class mptcp -> fallback-syn"


def test_errors_missing_and_new_entries() -> None:
    base = {"a": ok("a"), "b": ok("b"), "e": Entry("e", "error", None, None, "boom")}
    cur = {"a": Entry("a", "error", None, None, "crash"), "e": Entry("e", "error", None, None, "boom"),
           "n": ok("n")}
    verdicts = {d.key: (d.verdict, d.what) for d in compare(base, cur)}
    assert verdicts["a"] == ("regression", "status ok -> error")
    assert verdicts["b"] == ("regression", "missing from the current results")
    assert verdicts["e"][0] == "same"
    assert verdicts["n"] == ("new", "not in the baseline")


def test_junit_has_one_case_per_entry_and_a_failure_per_regression() -> None:
    diffs = compare({"a": ok("a"), "b": ok("b")}, {"a": ok("a", goodput=50), "b": ok("b"), "c": ok("c")})
    root = ET.fromstring(junit_xml(diffs))
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "3" and suite.get("failures") == "1"
    failures = [case for case in suite.iter("testcase") if case.find("failure") is not None]
    assert [case.get("name") for case in failures] == ["a"]
    assert "goodput -50.0%" in failures[0].find("failure").get("message")


def _matrix_copy(matrix_dir: Path, tmp_path: Path, edit) -> Path:
    doc = json.loads((matrix_dir / "matrix.json").read_text())
    edit(doc)
    other = tmp_path / "current"
    other.mkdir()
    (other / "matrix.json").write_text(json.dumps(doc))
    return other


def test_cli_matrix_against_itself_passes(matrix_dir: Path, tmp_path: Path, capsys) -> None:
    junit = tmp_path / "junit.xml"
    assert main([str(matrix_dir), str(matrix_dir / "matrix.json"), "--junit", str(junit)]) == 0
    assert "no differences" in capsys.readouterr().out
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == "0"


def test_cli_regression_exits_1_and_prints_the_difference(matrix_dir: Path, tmp_path: Path, capsys) -> None:
    def slower(doc: dict) -> None:
        doc["cells"][0]["goodput_mbps"] *= 0.5
    current = _matrix_copy(matrix_dir, tmp_path, slower)
    assert main([str(matrix_dir), str(current), "--tolerance", "20"]) == 1
    out = capsys.readouterr().out
    assert "none \u00d7 kernel-kernel" in out and "REGRESSION" in out and "goodput -50.0%" in out
    assert main([str(matrix_dir), str(current), "--tolerance", "60"]) == 0


def test_cli_result_directories_and_bad_input(run_dir: Path, rejected_dir: Path, tmp_path: Path,
                                              capsys) -> None:
    assert main([str(run_dir), str(run_dir / "result.json")]) == 0
    kind, entries = load_entries(tmp_path)  # a tree of runs, keyed by their paths
    assert kind == "results" and set(entries) == {"run_mptcp", "run_rejected"}
    assert main([str(run_dir.parent), str(run_dir.parent)]) == 0
    assert main([str(run_dir), str(tmp_path / "nothing")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{")
    assert main([str(run_dir), str(tmp_path / "bad.json")]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(run_dir), str(empty)]) == 2
    assert main([str(run_dir), str(run_dir), "--tolerance", "-1"]) == 2


def test_cli_refuses_to_compare_a_matrix_with_a_run(matrix_dir: Path, run_dir: Path, capsys) -> None:
    assert main([str(matrix_dir), str(run_dir)]) == 2
    assert "cannot compare a matrix input" in capsys.readouterr().err


def test_renamed_run_counts_as_missing_and_new(run_dir: Path, tmp_path: Path) -> None:
    result = json.loads((run_dir / "result.json").read_text())
    result["name"] = "renamed"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(result))
    assert main([str(run_dir), str(other)]) == 1
