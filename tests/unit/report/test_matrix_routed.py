"""Proxy and balancer rows of a matrix without a network (testbed.matrix_routed): the rows'
checks (one line each), which pairings a driver can run, and a cell's class and integrity
from a driver's result. tests/integration/matrix/test_routed_rows.py runs them for real."""

from __future__ import annotations

import copy
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from testbed.endpoints.payload import PayloadSource, expected_digest
from testbed.errors import SpecError
from testbed.matrix import matrix_document, parse_matrix_spec, select
from testbed.matrix_routed import cell_class, connection_integrity, routed_record
from testbed.report.tables import matrix_markdown

ROOT = Path(__file__).resolve().parents[3]
SOURCE = str(ROOT / "experiments" / "routed_test.toml")  # rows' specs resolve from experiments/
SPEC: dict[str, Any] = {
    "name": "t",
    "pairings": ["kernel-kernel", "python-kernel", "kernel-python", "python-python"],
    "base": {"topology": {"name": "two_path"}, "traffic": {"bytes": 1000}},
    "middleboxes": [{"name": "none", "chain": [], "expect": {"default": "mptcp"}}],
    "routed": [
        {"name": "proxy", "spec": "proxy/goodput_kernel.toml", "traffic": {"repeats": 1},
         "expect": {"default": "mptcp"}},
        {"name": "lb_hash", "spec": "lb/none_hash.toml", "traffic": {"connections": 5},
         "expect": {"kernel-kernel": "subflow-rejected"}},
    ],
}


def parsed(edit=None):
    raw = copy.deepcopy(SPEC)
    if edit is not None:
        edit(raw)
    return parse_matrix_spec(raw, source=SOURCE)


def test_pairings_choose_the_client_and_the_proxy_or_the_backends() -> None:
    matrix = parsed()
    assert matrix.total == 4 * 3
    cells = {(c.row.name, c.pairing): c for c in matrix.routed_cells}
    for pairing in matrix.pairings:
        client, server = pairing.split("-")
        spec = cells[("proxy", pairing)].spec
        assert (spec.client_stack, spec.variant, spec.repeats) == (client, server, 1)
        assert cells[("proxy", pairing)].expected == "mptcp"
        spec = cells[("lb_hash", pairing)].spec
        assert (spec.client_stack, spec.backend_stack, spec.connections) == (client, server, 5)
    assert cells[("lb_hash", "kernel-kernel")].expected == "subflow-rejected"
    assert cells[("lb_hash", "python-python")].expected is None  # the row names kernel-kernel only


def test_a_pairing_the_drivers_cannot_run_is_not_applicable() -> None:
    matrix = parsed(lambda raw: raw.update(pairings=["kernel-kernel", "kernel@6.1-kernel", "tcp-kernel"]))
    cells = {(c.row.name, c.pairing): c for c in matrix.routed_cells}
    for row in ("proxy", "lb_hash"):
        assert cells[(row, "kernel-kernel")].spec is not None
        for pairing in ("kernel@6.1-kernel", "tcp-kernel"):
            cell = cells[(row, pairing)]
            assert cell.spec is None and "host kernel's MPTCP or the python stack" in cell.reason
            assert cell.expected is None


def test_select_keeps_routed_rows_by_name() -> None:
    matrix = select(parsed(), "lb_hash", "kernel-kernel")
    assert [r.name for r in matrix.routed] == ["lb_hash"] and matrix.cells == ()
    assert [c.key for c in matrix.routed_cells] == ["lb_hash \u00d7 kernel-kernel"]


@pytest.mark.parametrize(("edit", "message"), [
    (lambda r: r["routed"][0].update(colour="red"), "unknown key 'colour'"),
    (lambda r: r["routed"][0].pop("spec"), "spec = \"...\" is required"),
    (lambda r: r["routed"][0].update(name="a/b"), "names a directory"),
    (lambda r: r["routed"][0].update(name="none"), "'none' used twice"),
    (lambda r: r["routed"][0].update(spec="middleboxes/coalesce_boundary.toml"), "neither a proxy spec"),
    (lambda r: r["routed"][0].update(spec="proxy/goodput_direct.toml"), "variant = \"none\""),
    (lambda r: r["routed"][0].update(spec="proxy/missing.toml"), "missing.toml"),
    (lambda r: r["routed"][0].update(traffic={"connections": 3}), "a proxy row takes bytes, repeats"),
    (lambda r: r["routed"][1].update(traffic={"connections": 0}), "must be an integer >= 1"),
    (lambda r: r["routed"][0].update(expect={"tcp-tcp": "mptcp"}), "'tcp-tcp' is not a pairing"),
    (lambda r: r["routed"][0].update(expect={"default": "works"}), "'works' is not an outcome class"),
    (lambda r: r.update(routed={"name": "x"}), "routed: wrong type dict"),
])
def test_a_bad_routed_row_is_one_line(edit, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parsed(edit)
    assert message in caught.value.message and "\n" not in caught.value.message


def test_a_short_stream_is_truncated_only_when_it_is_a_correct_prefix() -> None:
    seed, size = 7, 300_000
    prefix = PayloadSource(seed).window(0, 1000)
    wrong = bytes([prefix[0] ^ 1]) + prefix[1:]
    assert connection_integrity({"intact": True}, seed, size) == "ok"
    assert connection_integrity({"intact": False, "bytes": 1000, "sha256": expected_digest(seed, 1000)},
                                seed, size) == "truncated"
    assert connection_integrity({"intact": False, "bytes": 1000,
                                 "sha256": hashlib.sha256(wrong).hexdigest()}, seed, size) == "corrupted"
    same_length = {"intact": False, "bytes": size, "sha256": "0" * 64}
    assert connection_integrity(same_length, seed, size) == "corrupted"
    assert connection_integrity({"intact": False, "error": "ConnectionResetError"}, seed, size) == "unknown"


def test_the_cell_class_is_the_one_furthest_from_mptcp() -> None:
    assert cell_class(Counter({"mptcp/2": 19, "subflow-rejected": 1})) == "subflow-rejected"
    assert cell_class(Counter({"mptcp/2": 3, "mptcp/1": 1})) == "mptcp"
    assert cell_class(Counter({"mptcp/2": 1, "reset": 1, "fallback-syn": 2})) == "reset"
    assert cell_class(Counter()) == "reset"  # no connection at all says nothing went right


def test_a_cell_from_a_balancer_result_and_its_table_entry() -> None:
    matrix = parsed()
    cell = next(c for c in matrix.routed_cells if c.row.name == "lb_hash" and c.pairing == "kernel-kernel")
    connections = [{"seed": 1 + i, "intact": True, "bytes": 100_000, "subflows": 1 if i < 3 else 2}
                   for i in range(5)]
    result = {"counts": {"outcome_classes": {"subflow-rejected": 3, "mptcp/2": 2}, "joins_refused": 3,
                         "joins_established": 2, "errors": 0, "median_duration_s": 0.4},
              "connections": connections}
    record = routed_record(cell, result, "cells/lb_hash/kernel-kernel")
    assert (record["outcome"], record["integrity"], record["as_expected"]) == ("subflow-rejected", "ok", True)
    assert record["routed"]["outcome_classes"] == {"mptcp/2": 2, "subflow-rejected": 3}
    assert any("MPJoinNoTokenFound): 3" in line for line in record["evidence"])
    na = {"row": "lb_hash", "pairing": "python-python", "status": "not-applicable",
          "reason": "the balancer's ends are the host kernel's MPTCP or the python stack",
          "as_expected": None}
    doc = matrix_document(matrix, [record, na], partial=True, interrupted=False, started_at="",
                          elapsed_s=1.0, environment=None)
    assert doc["summary"]["not_applicable"] == 1 and doc["summary"]["no_expectation"] == 0
    assert [r["name"] for r in doc["rows"]] == ["none", "proxy", "lb_hash"]
    assert doc["rows"][2]["middleboxes"][0]["type"] == "l4_lb"
    table = matrix_markdown(json.loads(json.dumps(doc)))
    assert "- lb_hash: the balancer's ends are" in table and "1 not applicable" in table
    assert "subflow-rejected (3 of 5 connections)" in table


def test_a_proxy_cell_that_lost_data_is_not_as_expected() -> None:
    matrix = parsed()
    cell = next(c for c in matrix.routed_cells if c.row.name == "proxy" and c.pairing == "python-python")
    runs = [{"index": 0, "intact": False, "bytes": 5000, "sha256": expected_digest(cell.spec.seed, 5000),
             "error": "ConnectionResetError: [Errno 104]"}]
    result = {"summary": {"outcome_classes": {"reset": 1}, "errors": [runs[0]["error"]],
                          "median_goodput_mbit": None, "median_duration_s": None}, "runs": runs}
    record = routed_record(cell, result, "cells/proxy/python-python")
    assert (record["outcome"], record["integrity"], record["as_expected"]) == ("reset", "truncated", False)
    assert "error: ConnectionResetError: [Errno 104]" in record["evidence"]
