"""The matrix without a network: spec validation (one line, exit 2), cell specs, and the run
loop with an injected runner (errors recorded and passed, Ctrl-C keeps a partial matrix.json,
--resume reuses finished cells)."""

from __future__ import annotations

import copy
import io
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from testbed.errors import RunFailed, SpecError
from testbed.matrix import (
    MatrixInterrupted,
    cell_raw_spec,
    load_matrix_spec,
    main,
    parse_matrix_spec,
    run_matrix,
    select,
)
from tests.unit.report.conftest import FIXTURES

ROOT = Path(__file__).resolve().parents[3]
SPEC: dict[str, Any] = {
    "name": "t",
    "pairings": ["kernel-kernel", "python-kernel"],
    "base": {"topology": {"name": "two_path"}, "traffic": {"seconds": 1}, "mptcp": {"subflows": 2}},
    "middleboxes": [
        {"name": "none", "chain": [], "expect": {"default": "mptcp"}},
        {"name": "strip_syn", "node": "mb_a", "type": "strip_options",
         "params": {"what": ["mp_capable"], "packets": ["syn"]}, "mptcp": {"subflows": 0},
         "traffic": {"bytes": 1000}, "expect": {"kernel-kernel": "fallback-syn"}},
    ],
}


def spec_with(edit) -> dict[str, Any]:
    raw = copy.deepcopy(SPEC)
    edit(raw)
    return raw


@pytest.mark.parametrize(("edit", "message"), [
    (lambda r: r.update(colour="red"), "unknown key 'colour'"),
    (lambda r: r.update(pairings=["kernel"]), "must be CLIENT-SERVER"),
    (lambda r: r.update(pairings=["kernel-quic"]), "unknown stack 'quic'"),
    (lambda r: r.update(pairings=["kernel-kernel", "kernel-kernel"]), "twice"),
    (lambda r: r["middleboxes"][0]["expect"].update(default="works"), "'works' is not an outcome class"),
    (lambda r: r["middleboxes"][0]["expect"].update({"tcp-tcp": "mptcp"}), "unknown key 'tcp-tcp'"),
    (lambda r: r["middleboxes"][1].update(name="none"), "row name 'none' used twice"),
    (lambda r: r["middleboxes"][1].update(name="a/b"), "names a directory"),
    (lambda r: r["middleboxes"][1].update(chain=[]), "not both"),
    (lambda r: r["middleboxes"][1].pop("node"), "needs both node and type"),
    (lambda r: r["middleboxes"][1].update(type="strip_option"), "did you mean 'strip_options'"),
    (lambda r: r["middleboxes"][1].update(node="mb_z"), "middlebox node 'mb_z' is not in two_path"),
    (lambda r: r["middleboxes"][1]["params"].update(what=["nonsense"]), "strip_syn \u00d7 kernel-kernel"),
    (lambda r: r["middleboxes"][1]["mptcp"].update(subflows=99), "[mptcp].subflows must be 0..8"),
    (lambda r: r["base"].pop("traffic"), "missing required key 'traffic'"),
    (lambda r: r.update(middleboxes=[]), "middleboxes is empty"),
])
def test_bad_specs_are_one_line_spec_errors(edit, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_matrix_spec(spec_with(edit), source="m.toml")
    assert message in caught.value.message and "\n" not in caught.value.message
    assert caught.value.exit_code == 2


def test_cli_exits_2_with_one_line_for_a_bad_file(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[base.topology]\nname = "two_path"\n[base.traffic]\nseconds = 1\n'
                   '[[middleboxes]]\nname = "r"\nnode = "mb_a"\ntype = "nat"\nparams = { bogus = 1 }\n')
    assert main([str(bad), "--out", str(tmp_path / "out"), "--check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("testbed: ") and err.count("\n") == 1 and "bogus" in err
    assert not (tmp_path / "out").exists()
    assert main([str(tmp_path / "missing.toml"), "--out", str(tmp_path / "o")]) == 2
    (tmp_path / "broken.toml").write_text("name = ")
    assert main([str(tmp_path / "broken.toml"), "--out", str(tmp_path / "o")]) == 2


def test_cell_specs_merge_base_and_row() -> None:
    matrix = parse_matrix_spec(copy.deepcopy(SPEC), source="m.toml")
    assert [(c.row.name, c.pairing) for c in matrix.cells] == [
        ("none", "kernel-kernel"), ("none", "python-kernel"), ("strip_syn", "kernel-kernel"),
        ("strip_syn", "python-kernel")]
    strip_python = matrix.cells[3]
    assert strip_python.spec.client.stack == "python" and strip_python.spec.server.stack == "kernel"
    assert strip_python.spec.traffic.bytes == 1000 and strip_python.spec.traffic.seconds is None
    assert strip_python.spec.mptcp.subflows == 0
    assert strip_python.expected is None and strip_python.spec.expect == {}
    assert matrix.cells[2].spec.expect == {"outcome": "fallback-syn"}
    assert matrix.cells[1].spec.middleboxes == () and matrix.cells[1].expected == "mptcp"
    raw = cell_raw_spec(matrix, matrix.rows[0], "kernel-kernel")
    assert raw["traffic"] == {"seconds": 1} and raw["name"] == "t/none/kernel-kernel"


def test_select_rows_and_pairings() -> None:
    matrix = parse_matrix_spec(copy.deepcopy(SPEC), source="m.toml")
    part = select(matrix, "strip_syn", "python-kernel")
    assert [(c.row.name, c.pairing) for c in part.cells] == [("strip_syn", "python-kernel")]
    with pytest.raises(SpecError, match="no row 'nope'"):
        select(matrix, "nope", None)
    with pytest.raises(SpecError, match="not a pairing"):
        select(matrix, None, "tcp-tcp")


@pytest.mark.parametrize("name", ["fallback_matrix.toml", "fallback_matrix_ci.toml"])
def test_shipped_matrix_specs_are_valid(name: str) -> None:
    matrix = load_matrix_spec(ROOT / "experiments" / name)
    assert all(cell.expected for cell in matrix.cells), "every shipped cell declares its expectation"


class FakeRunner:
    """Stands in for testbed.runner.run_experiment: writes a result.json whose outcome is
    chosen per row, raises for chosen cells, or interrupts like Ctrl-C."""

    def __init__(self, outcomes: dict[str, str], fail: set[str] = frozenset(), crash: set[str] = frozenset(),
                 interrupt_at: int | None = None) -> None:
        self.outcomes, self.fail, self.crash, self.interrupt_at = outcomes, fail, crash, interrupt_at
        self.calls: list[str] = []
        self.template = json.loads((FIXTURES / "run_mptcp" / "result.json").read_text())

    def __call__(self, spec, out_dir: Path, *, progress) -> dict[str, Any]:
        self.calls.append(spec.name)
        progress("building two_path")
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        row = spec.name.split("/")[1]
        if spec.name in self.fail:
            raise RunFailed("server endpoint did not start: example")
        if spec.name in self.crash:
            raise ZeroDivisionError("stack bug")
        result = copy.deepcopy(self.template)
        result["name"], result["spec"] = spec.name, spec.as_dict()
        result["connections"][0]["outcome"] = self.outcomes[row]
        result["connections"][0]["client_stack"] = spec.client.stack
        (out_dir / "result.json").write_text(json.dumps(result))
        shutil.copy(FIXTURES / "run_mptcp" / "timeseries.csv", out_dir / "timeseries.csv")
        return result


def test_run_records_results_errors_and_differences(tmp_path: Path) -> None:
    matrix = parse_matrix_spec(copy.deepcopy(SPEC), source="m.toml")
    runner = FakeRunner({"none": "mptcp", "strip_syn": "mptcp"}, fail={"t/none/python-kernel"},
                        crash={"t/strip_syn/python-kernel"})
    stream = io.StringIO()
    doc = run_matrix(matrix, tmp_path, runner=runner, stream=stream, tty=False)
    assert len(runner.calls) == 4  # errors did not stop the matrix
    cells = {(c["row"], c["pairing"]): c for c in doc["cells"]}
    assert cells[("none", "kernel-kernel")]["as_expected"] is True
    assert cells[("none", "kernel-kernel")]["subflows_carrying"] == 2
    assert cells[("none", "python-kernel")]["status"] == "error"
    assert cells[("none", "python-kernel")]["error"] == "server endpoint did not start: example"
    assert cells[("none", "python-kernel")]["as_expected"] is False
    assert cells[("strip_syn", "kernel-kernel")]["as_expected"] is False  # mptcp, expected fallback-syn
    crash = cells[("strip_syn", "python-kernel")]
    assert crash["error"] == "ZeroDivisionError: stack bug" and crash["as_expected"] is None
    assert "Traceback" in (tmp_path / "cells/strip_syn/python-kernel/run.log").read_text()
    assert doc["summary"] == {"cells": 4, "run": 4, "as_expected": 1, "differ": 2, "errors": 2,
                              "no_expectation": 1, "not_applicable": 0, "not_run": 0, "degraded": 0,
                              "unstable": 0}
    assert json.loads((tmp_path / "matrix.json").read_text())["cells"] == doc["cells"]
    assert "\u2717" in (tmp_path / "matrix.md").read_text()
    assert "building two_path" in (tmp_path / "cells/none/kernel-kernel/run.log").read_text()
    assert len(stream.getvalue().splitlines()) == 5  # one per cell and the summary


def test_interrupt_keeps_a_partial_matrix(tmp_path: Path) -> None:
    matrix = parse_matrix_spec(copy.deepcopy(SPEC), source="m.toml")
    runner = FakeRunner({"none": "mptcp", "strip_syn": "fallback-syn"}, interrupt_at=3)
    with pytest.raises(MatrixInterrupted) as caught:
        run_matrix(matrix, tmp_path, runner=runner, stream=io.StringIO(), tty=False)
    stored = json.loads((tmp_path / "matrix.json").read_text())
    assert stored["partial"] is True and stored["interrupted"] is True
    assert [(c["row"], c["pairing"]) for c in stored["cells"]] == [("none", "kernel-kernel"),
                                                                  ("none", "python-kernel")]
    assert stored["summary"]["not_run"] == 2 and caught.value.doc == stored
    assert "PARTIAL" in (tmp_path / "matrix.md").read_text()
    # --resume picks up where it stopped, re-running nothing that finished
    again = FakeRunner({"none": "mptcp", "strip_syn": "fallback-syn"})
    doc = run_matrix(matrix, tmp_path, runner=again, resume=True, stream=io.StringIO(), tty=False)
    assert json.loads((tmp_path / "matrix.before-resume.json").read_text()) == stored  # kept
    assert again.calls == ["t/strip_syn/kernel-kernel", "t/strip_syn/python-kernel"]
    assert doc["partial"] is False and doc["summary"]["as_expected"] == 3
    assert [c.get("reused", False) for c in doc["cells"]] == [True, True, False, False]


def test_a_stale_result_is_never_taken_for_a_new_one(tmp_path: Path) -> None:
    matrix = parse_matrix_spec(copy.deepcopy(SPEC), source="m.toml")
    run_matrix(matrix, tmp_path, runner=FakeRunner({"none": "mptcp", "strip_syn": "fallback-syn"}),
               stream=io.StringIO(), tty=False)
    doc = run_matrix(matrix, tmp_path, runner=FakeRunner({}, fail={c.spec.name for c in matrix.cells}),
                     stream=io.StringIO(), tty=False)
    assert all(c["status"] == "error" for c in doc["cells"])
    assert not (tmp_path / "cells/none/kernel-kernel/result.json").exists()


def test_command_exit_codes(tmp_path: Path, capsys) -> None:
    import argparse

    from testbed.matrix import add_arguments
    from testbed.matrix import run as run_command

    spec = ROOT / "experiments" / "fallback_matrix_ci.toml"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([str(spec), "--out", str(tmp_path / "a"), "--rows", "none,strip_mp_join"])
    passing = FakeRunner({"none": "mptcp", "strip_mp_join": "subflow-rejected"})
    assert run_command(args, runner=passing) == 0
    assert "2/2 cells as expected" in capsys.readouterr().out
    differing = FakeRunner({"none": "mptcp", "strip_mp_join": "mptcp"})
    junit = tmp_path / "matrix.xml"
    with_junit = parser.parse_args([*map(str, (spec, "--out", tmp_path / "a", "--rows", "none,strip_mp_join",
                                               "--junit", junit))])
    assert run_command(with_junit, runner=differing) == 1
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("2", "1", "0")
    (failed,) = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed.get("name") == "strip_mp_join \u00d7 kernel-kernel"
    message = failed.find("failure").get("message")
    assert message == "mptcp 181.4 Mbit/s (2/2 subflows) (expected subflow-rejected)"
    assert "differs: strip_mp_join \u00d7 kernel-kernel: mptcp" in capsys.readouterr().out
    # an error fails the matrix even where no outcome was expected
    bare = tmp_path / "bare.toml"
    bare.write_text('name = "bare"\npairings = ["kernel-kernel"]\n[base.topology]\nname = "two_path"\n'
                    '[base.traffic]\nseconds = 1\n[[middleboxes]]\nname = "none"\nchain = []\n')
    no_expect = parser.parse_args([str(bare), "--out", str(tmp_path / "b")])
    assert run_command(no_expect, runner=FakeRunner({"none": "stalled"})) == 0
    assert run_command(no_expect, runner=FakeRunner({}, crash={"bare/none/kernel-kernel"})) == 1
    assert "error: none \u00d7 kernel-kernel: ZeroDivisionError: stack bug" in capsys.readouterr().out
    interrupting = FakeRunner({"none": "mptcp"}, interrupt_at=1)
    no_expect.junit = str(junit)
    assert run_command(no_expect, runner=interrupting) == 130
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("1", "0", "1")
