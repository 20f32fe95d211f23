"""`testbed analyze` on captures through middleboxes: a small fallback matrix (kernel<->kernel,
1 s uploads), each cell's capture analysed and compared with the cell's result.json.

The capture is on the client, before the boxes: it shows what the client sent and what came
back. Bytes per subflow agree within 0.1 % and the total exactly in every cell, and the
analysis names the fallback the box caused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow]
if os.geteuid() != 0:
    pytest.skip("needs root: real testbed runs", allow_module_level=True)

TESTBED = [sys.executable, "-m", "testbed.cli"]
REQUEST_BYTES = 24
SPEC = """
name = "analyze_middleboxes"
seed = 1
pairings = ["kernel-kernel"]
[base.topology]
name = "two_path"
[base.traffic]
seconds = 1
timeout_s = 5
direction = "upload"
[base.mptcp]
subflows = 2
client_subflow_endpoints = true
[base.capture]
pcap = true

[[middleboxes]]
name = "strip_mp_capable_syn"
node = "mb_a"
type = "strip_options"
params = { what = ["mp_capable"], packets = ["syn"], direction = "upstream" }
mptcp = { subflows = 0, client_subflow_endpoints = false }
expect = { default = "fallback-syn" }

[[middleboxes]]
name = "strip_mp_join"
node = "mb_b"
type = "strip_options"
params = { what = ["mp_join"], packets = ["syn", "synack"] }
expect = { default = "subflow-rejected" }

[[middleboxes]]
name = "strip_dss_all"
node = "mb_a"
type = "strip_options"
params = { what = ["dss"] }
mptcp = { subflows = 0, client_subflow_endpoints = false }
expect = { default = "fallback-infinite-map" }
"""
# what the analysis says about each cell, seen from the client
EXPECTED = {
    "strip_mp_capable_syn": {"fallback": "no MP_CAPABLE on the SYN/ACK", "join_ended": None},
    "strip_mp_join": {"fallback": None, "join_ended": "RST (MPTCP error)"},
    "strip_dss_all": {"fallback": "data without a mapping", "join_ended": None},
}


def test_analysis_agrees_through_middleboxes(tmp_path: Path) -> None:
    spec = tmp_path / "matrix.toml"
    spec.write_text(SPEC)
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run([*TESTBED, "matrix", str(spec), "--out", str(tmp_path / "m")],
                          capture_output=True, text=True, timeout=300, cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr
    for name, expected in EXPECTED.items():
        cell = tmp_path / "m" / "cells" / name / "kernel-kernel"
        analysed = subprocess.run([*TESTBED, "analyze", str(cell / "capture.pcap"), "--out",
                                   str(cell / "analysis"), "--no-plots", "--quiet"],
                                  capture_output=True, text=True, timeout=120, cwd=root)
        assert analysed.returncode == 0, (name, analysed.stderr)
        (conn,) = json.loads((cell / "result.json").read_text())["connections"]
        doc = json.loads((cell / "analysis" / "analysis.json").read_text())
        (connection,) = doc["connections"]
        subflows = {s["client"]: s for s in doc["subflows"]}
        for endpoint in conn["subflows"]:
            ours = subflows[endpoint["local"]]["directions"][0]["bytes_acked"]
            assert abs(ours - endpoint["bytes"]) <= max(2, endpoint["bytes"] * 0.001), (name, endpoint)
        assert connection["data"][0]["data_acked"] == conn["bytes"] + REQUEST_BYTES, name
        assert connection["fallback"] == expected["fallback"], name
        joins = [s["ended_by"] for s in doc["subflows"] if s["role"] == "join"]
        assert joins == ([expected["join_ended"]] if expected["join_ended"] else []), name
