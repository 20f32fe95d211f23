"""A matrix spec's [outcome_only] table: which cells it shortens and how, bad values as one-line
SpecErrors, the record's mark, and the shipped matrix's use of it."""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import pytest

from testbed.errors import SpecError
from testbed.matrix import load_matrix_spec, parse_matrix_spec, run_matrix
from testbed.matrix_jobs import waits
from testbed.matrix_outcome_only import ends_incomplete
from tests.unit.report.test_matrix import FakeRunner

ROOT = Path(__file__).resolve().parents[3]
SPEC: dict[str, Any] = {
    "name": "o",
    "pairings": ["kernel-kernel", "python-kernel"],
    "base": {"topology": {"name": "two_path"}, "traffic": {"bytes": 20_000_000}},
    "outcome_only": {"stall_timeout_s": 10.0, "traffic": {"bytes": 2_000_000}},
    "middleboxes": [
        {"name": "none", "chain": [], "expect": {"default": "mptcp"}},
        {"name": "resets", "chain": [], "expect": {"kernel-kernel": "reset \u00b7 corrupted",
                                                   "default": "fallback-infinite-map"}},
        {"name": "truncates", "chain": [], "expect": {"default": "mp-fail \u00b7 truncated"}},
        {"name": "varies", "chain": [], "expect": {"default": "mptcp | stalled"}},
        {"name": "crawls", "chain": [], "outcome_only": True, "traffic": {"timeout_s": 180.0},
         "expect": {"default": "mptcp"}},
        {"name": "by_time", "chain": [], "outcome_only": True, "traffic": {"seconds": 30},
         "expect": {"default": "mptcp"}},
    ],
}


def spec_with(edit) -> dict[str, Any]:
    raw = copy.deepcopy(SPEC)
    edit(raw)
    return raw


def cells_of(raw: dict[str, Any]) -> dict[tuple[str, str], Any]:
    matrix = parse_matrix_spec(raw, source="o.toml")
    return {(cell.row.name, cell.pairing): cell for cell in matrix.cells}


def test_cells_expected_to_end_incomplete_get_the_stall_timeout_and_keep_their_transfer() -> None:
    cells = cells_of(copy.deepcopy(SPEC))
    for key in (("resets", "kernel-kernel"), ("truncates", "kernel-kernel"),
                ("truncates", "python-kernel"), ("varies", "kernel-kernel")):
        assert cells[key].spec.traffic.timeout_s == 10.0, key
        assert cells[key].spec.traffic.bytes == 20_000_000, key
        assert cells[key].outcome_only == {"timeout_s": 10.0}
    # the same row's pairing that is expected to complete measures as usual
    measuring = cells[("resets", "python-kernel")]
    assert measuring.spec.traffic.timeout_s == 60.0 and measuring.outcome_only == {}
    assert cells[("none", "kernel-kernel")].spec.traffic.timeout_s == 60.0


def test_outcome_only_rows_run_the_smaller_transfer_over_their_own_traffic() -> None:
    cells = cells_of(copy.deepcopy(SPEC))
    crawl = cells[("crawls", "python-kernel")]
    assert crawl.spec.traffic.bytes == 2_000_000 and crawl.spec.traffic.timeout_s == 180.0
    assert crawl.outcome_only == {"bytes": 2_000_000}
    timed = cells[("by_time", "kernel-kernel")]  # bytes replaces the row's seconds
    assert timed.spec.traffic.bytes == 2_000_000 and timed.spec.traffic.seconds is None


def test_without_the_table_nothing_changes() -> None:
    raw = spec_with(lambda r: r.pop("outcome_only"))
    for cell in cells_of(raw).values():
        assert cell.outcome_only == {}
        assert cell.spec.traffic.timeout_s in (60.0, 180.0, 90.0)
    assert cells_of(raw)[("crawls", "kernel-kernel")].spec.traffic.bytes == 20_000_000


@pytest.mark.parametrize(("edit", "message"), [
    (lambda r: r.update(outcome_only=3), "outcome_only: wrong type int"),
    (lambda r: r["outcome_only"].update(stall=1), "unknown key 'stall'"),
    (lambda r: r["outcome_only"].update(stall_timeout_s=0), "stall_timeout_s must be a number"),
    (lambda r: r["outcome_only"].update(stall_timeout_s="10"), "stall_timeout_s must be a number"),
    (lambda r: r["outcome_only"].update(stall_timeout_s=float("inf")), "stall_timeout_s must be"),
    (lambda r: r["outcome_only"].update(traffic={"direction": "download"}), "unknown key 'direction'"),
    (lambda r: r["outcome_only"].update(traffic={"bytes": -1}), "traffic.bytes must be a number above 0"),
    (lambda r: r["outcome_only"].update(traffic=[1]), "traffic must be a table"),
    (lambda r: r["middleboxes"][4].update(outcome_only="yes"), "outcome_only: wrong type str"),
])
def test_bad_outcome_only_settings_are_one_line_spec_errors(edit, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_matrix_spec(spec_with(edit), source="o.toml")
    assert message in caught.value.message and "\n" not in caught.value.message


def test_truncated_deliveries_wait_like_resets_and_stalls() -> None:
    assert ends_incomplete([("mp-fail", "truncated")])
    assert ends_incomplete([("mptcp", None), ("reset", "corrupted")])
    assert not ends_incomplete([("mp-fail", "alg-edited"), ("fallback-infinite-map", None)])
    cells = cells_of(copy.deepcopy(SPEC))
    assert waits(cells[("truncates", "python-kernel")])
    assert not waits(cells[("crawls", "kernel-kernel")])


def test_the_record_says_what_was_shortened(tmp_path: Path) -> None:
    raw = spec_with(lambda r: r.update(pairings=["kernel-kernel"]))
    matrix = parse_matrix_spec(raw, source="o.toml")
    outcomes = {"none": "mptcp", "resets": "reset", "truncates": "mp-fail", "varies": "mptcp",
                "crawls": "mptcp", "by_time": "mptcp"}
    doc = run_matrix(matrix, tmp_path, runner=FakeRunner(outcomes), stream=io.StringIO(), tty=False)
    marks = {cell["row"]: cell.get("outcome_only") for cell in doc["cells"]}
    assert marks == {"none": None, "resets": {"timeout_s": 10.0}, "truncates": {"timeout_s": 10.0},
                     "varies": {"timeout_s": 10.0}, "crawls": {"bytes": 2_000_000},
                     "by_time": {"bytes": 2_000_000}}


def test_the_shipped_matrix_shortens_only_cells_judged_on_their_class() -> None:
    matrix = load_matrix_spec(ROOT / "experiments" / "fallback_matrix.toml")
    shortened = {cell.key for cell in matrix.cells if cell.outcome_only}
    for cell in matrix.cells:
        if cell.key not in shortened:  # every cell that measures keeps the base transfer
            assert cell.spec.traffic.timeout_s >= 60.0, cell.key
        elif "timeout_s" in cell.outcome_only:
            assert waits(cell), cell.key
    assert {cell.row.name for cell in matrix.cells if "bytes" in cell.outcome_only} == {
        "rewrite_seq_no_sack_fix"}


def test_a_vm_client_keeps_the_cells_timeout_a_vm_server_gets_the_stall_timeout() -> None:
    """A client in a VM starts its program seconds after `go`, and that counts against the host
    server's accept timeout: a stall timeout there would cut clients that work."""
    raw = spec_with(lambda r: r.update(pairings=["kernel-kernel", "kernel@6.1-kernel", "kernel-kernel@6.1"]))
    cells = cells_of(raw)
    vm_client = cells[("truncates", "kernel@6.1-kernel")]
    assert vm_client.spec.traffic.timeout_s == 60.0 and vm_client.outcome_only == {}
    vm_server = cells[("truncates", "kernel-kernel@6.1")]
    assert vm_server.spec.traffic.timeout_s == 10.0 and vm_server.outcome_only == {"timeout_s": 10.0}
    # an outcome-only row's smaller transfer still applies to a VM client
    assert cells[("crawls", "kernel@6.1-kernel")].spec.traffic.bytes == 2_000_000
