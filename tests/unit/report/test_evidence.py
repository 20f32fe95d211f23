"""Wire evidence: tshark's reading of a real capture (the first 20 frames of a kernel run with
MP_JOIN stripped on path B) and the counting rules on hand-made segments."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from testbed import errors
from testbed.report.command import main
from testbed.report.evidence import (
    Segment,
    disagreements,
    parse_tshark_fields,
    read_capture,
    summarize_segments,
    wire_evidence,
)

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")


@needs_tshark
def test_stripped_join_is_visible_on_the_wire(rejected_dir: Path) -> None:
    result = json.loads((rejected_dir / "result.json").read_text())
    evidence = wire_evidence(rejected_dir, result)
    assert evidence is not None and evidence["dissector"] == "tshark"
    counts = evidence["counts"]
    assert counts["MP_CAPABLE SYN sent"] == 1 and counts["SYN/ACK received with MP_CAPABLE"] == 1
    assert counts["MP_JOIN SYN sent"] == 1 and "SYN/ACK received with MP_JOIN" not in counts
    assert counts["sent MP_TCPRST"] == 1
    statement = "wire: 1 MP_JOIN SYN(s) sent, 0 SYN/ACK(s) with MP_JOIN received, 1 without"
    assert statement in evidence["statements"]


@needs_tshark
def test_report_writes_wire_json_and_lists_it_in_the_summary(rejected_dir: Path) -> None:
    assert main([str(rejected_dir)]) == 0
    stored = json.loads((rejected_dir / "wire.json").read_text())
    assert stored["counts"]["MP_JOIN SYN sent"] == 1
    assert "MP_JOIN SYN(s) sent" in (rejected_dir / "summary.md").read_text()


@needs_tshark
def test_an_unreadable_capture_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "capture.pcap").write_bytes(b"not a pcap")
    with pytest.raises(errors.TestbedError, match="tshark could not read"):
        read_capture(tmp_path / "capture.pcap", 5201)


def test_no_capture_no_evidence(run_dir: Path) -> None:
    assert wire_evidence(run_dir, {}) is None


def seg(sent: bool, port: int, *, syn=False, ack=True, rst=False, payload=0, subtypes=()) -> Segment:
    return Segment(sent, port, syn, ack, rst, payload, frozenset(subtypes))


def test_synack_without_mp_capable_and_data_without_dss() -> None:
    evidence = summarize_segments([
        seg(True, 40000, syn=True, ack=False, subtypes={"MP_CAPABLE"}),
        seg(False, 40000, syn=True),
        seg(True, 40000, payload=1000),
        seg(True, 40000, payload=1000, subtypes={"DSS"}),
        seg(False, 40000, rst=True, subtypes={"MP_FASTCLOSE"}),
    ])
    assert evidence.statements == [
        "wire: SYN sent with MP_CAPABLE, SYN/ACK arrived without it (plain TCP)",
        "wire: 1 of 2 data segments sent without a DSS mapping",
        "wire: 1 MP_FASTCLOSE received by the client",
        "wire: 1 RST received by the client",
    ]


def test_plain_syn_and_unanswered_syns() -> None:
    assert summarize_segments([seg(True, 1, syn=True, ack=False)]).statements == [
        "wire: the client's SYN carried no MP_CAPABLE"]
    unanswered = summarize_segments([seg(True, 1, syn=True, ack=False, subtypes={"MP_CAPABLE"})] * 3)
    assert unanswered.statements == ["wire: 3 MP_CAPABLE SYN(s) sent, no SYN/ACK received"]


def test_tshark_field_parsing() -> None:
    text = "40000\t5201\t1\t0\t0\t0\t0\n5201\t40000\t0\t1\t0\t100\t2;2\n9\t10\t0\t1\t0\t0\t\n"
    first, second = parse_tshark_fields(text, 5201)  # the third is another connection: ignored
    assert first.sent and first.syn and first.subtypes == {"MP_CAPABLE"}
    assert not second.sent and second.client_port == 40000 and second.payload == 100
    with pytest.raises(errors.TestbedError, match="line 1: 2 fields"):
        parse_tshark_fields("1\t2\n", 5201)
    with pytest.raises(errors.TestbedError, match="line 1"):
        parse_tshark_fields("x\t5201\t1\t0\t0\t0\t0\n", 5201)


def test_wire_disagreements_with_the_outcome_class() -> None:
    refused_join = {"MP_JOIN SYN sent": 1, "MP_CAPABLE SYN sent": 1, "SYN/ACK received with MP_CAPABLE": 1}
    assert disagreements("subflow-rejected", refused_join) == []
    (conflict,) = disagreements("mptcp", refused_join)
    assert "1 of 1 MP_JOIN SYN(s) got no MP_JOIN SYN/ACK" in conflict
    assert disagreements("mptcp", {**refused_join, "SYN/ACK received with MP_JOIN": 1}) == []
    negotiated = {"MP_CAPABLE SYN sent": 1, "SYN/ACK received with MP_CAPABLE": 1, "MP_CAPABLE ACK sent": 2}
    assert "negotiated, then fallen back" in disagreements("fallback-syn", negotiated)[0]
    assert disagreements("fallback-syn", {**negotiated, "SYN/ACK received with MP_CAPABLE": 0}) == []
    assert disagreements("fallback-infinite-map", negotiated) == []


@needs_tshark
def test_matrix_cell_flags_a_wire_contradiction(rejected_dir: Path) -> None:
    from testbed.matrix import cell_record_from_result
    from testbed.report.tables import matrix_markdown

    result = json.loads((rejected_dir / "result.json").read_text())
    result["connections"][0]["outcome"] = "mptcp"  # what the classifier said for a python client
    wire = wire_evidence(rejected_dir, result)
    key = {"row": "strip_mp_join", "pairing": "python-kernel"}
    cell = cell_record_from_result(key, result, "subflow-rejected", "cells/x", wire)
    assert len(cell["wire_disagrees"]) == 1
    doc = {"name": "m", "pairings": ["python-kernel"], "rows": [{"name": "strip_mp_join"}], "cells": [cell]}
    md = matrix_markdown(doc)
    assert "\u26a0 wire" in md and "strip_mp_join \u00d7 python-kernel: outcome mptcp, but on the wire" in md
