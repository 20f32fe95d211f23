"""Every run gets its pictures: throughput.png from the time series, and with a capture the
data-sequence graph and the capture's analysis."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from testbed.analyze.pictures import pictures_or_warning, write_run_pictures
from testbed.analyze.synthetic import write_synthetic_capture

FIXTURE = Path(__file__).resolve().parents[1] / "report" / "fixtures" / "run_mptcp"


def test_throughput_png_without_a_capture(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    result = json.loads((run / "result.json").read_text())
    written = {p.name for p in write_run_pictures(run, result)}
    assert written == {"throughput.png"}
    assert (run / "plots.json").exists() and (run / "throughput.png").stat().st_size > 1000


def test_data_sequence_graph_with_a_capture(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    write_synthetic_capture(run / "capture.pcap", packets=3000)
    result = json.loads((run / "result.json").read_text())
    written = {p.name for p in write_run_pictures(run, result)}
    assert {"throughput.png", "data_sequence.png", "analysis.html"} <= written
    assert json.loads((run / "analysis" / "analysis.json").read_text())["connections"]


def test_a_broken_capture_is_a_warning_not_a_lost_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    (run / "capture.pcap").write_bytes(b"not a capture at all")
    result = json.loads((run / "result.json").read_text())
    written, problem = pictures_or_warning(run, result)
    assert written == [] and "not a pcap or pcapng capture" in problem
