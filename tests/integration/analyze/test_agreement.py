"""`testbed analyze` against the endpoints and tshark on a real kernel<->kernel two_path run.

One upload of 3 s over two paths of 50 Mbit/s, 10 ms, the second path taken down after 1 s so
the kernel reinjects what was in flight there; the client host's capture (tcpdump -i any,
snaplen 200, Linux cooked) is analysed and compared with what the endpoints reported in
result.json, the kernel's MPTcpExt counters and tshark's MPTCP analysis of the same file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.analyze.agreement import compare_run

pytestmark = [pytest.mark.root, pytest.mark.slow]
if os.geteuid() != 0:
    pytest.skip("needs root: a real testbed run", allow_module_level=True)

TESTBED = [sys.executable, "-m", "testbed.cli"]
REQUEST_BYTES = 24  # the client's request precedes the upload (testbed.endpoints.transfer)
SPEC = """
name = "analyze_agreement"
seed = 3
[topology]
name = "two_path"
[topology.params]
rate_mbit = 50
delay_ms = 10
[[endpoints]]
role = "server"
stack = "kernel"
[[endpoints]]
role = "client"
stack = "kernel"
[traffic]
seconds = 3
[mptcp]
subflows = 2
client_subflow_endpoints = true
[capture]
pcap = true
[[timeline]]
at_s = 1.0
link = "b"
up = false
"""


def test_analysis_agrees_with_endpoints_counters_and_tshark(tmp_path: Path) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    out = tmp_path / "run"
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run([*TESTBED, "run", str(spec), "--out", str(out)], capture_output=True,
                          text=True, timeout=120, cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr
    analysed = subprocess.run([*TESTBED, "analyze", str(out / "capture.pcap"), "--out",
                               str(tmp_path / "analysis"), "--quiet"],
                              capture_output=True, text=True, timeout=120, cwd=root)
    assert analysed.returncode == 0, analysed.stderr
    result = json.loads((out / "result.json").read_text())
    doc = json.loads((tmp_path / "analysis" / "analysis.json").read_text())
    (conn,) = result["connections"]
    (connection,) = doc["connections"]
    subflows = {s["client"]: s for s in doc["subflows"] if s["connection"] == connection["index"]}
    assert len(conn["subflows"]) == len(subflows) == 2
    assert all(s["last_sample_unix"] > 0 for s in conn["subflows"])
    for endpoint in conn["subflows"]:
        ours = subflows[endpoint["local"]]["directions"][0]
        assert abs(ours["bytes_retrans"] - endpoint["bytes_retrans"]) <= max(
            3000, endpoint["bytes_retrans"] * 0.01), endpoint
    assert connection["violations"] == {}
    # every check of testbed.analyze.agreement (docs/analyze.md): bytes per subflow at the
    # sender's last sample within 0.1 %, the total exactly (request + upload), reinjections
    # against the sender's mptcpi_bytes_retrans (at least as many: once path b goes stale
    # Linux pushes its data again uncounted; exactly as many otherwise) and the receiver's
    # DuplicateData, and tshark on the same file
    row = compare_run(out, tshark=shutil.which("tshark") is not None)
    differ = [c for c in row["checks"] if c["verdict"] == "differ"]
    assert not differ, differ
    names = [c["name"] for c in row["checks"]]
    assert sum(name.startswith("subflow ") for name in names) == 2
    total = next(c for c in row["checks"] if c["name"] == "total bytes")
    assert total["ours"] == conn["bytes"] + REQUEST_BYTES == total["theirs"]
    retrans = next(c for c in row["checks"] if "mptcpi_bytes_retrans" in c["name"])
    stale = conn["counters"]["client"].get("MPTcpExtSubflowStale", 0)
    assert retrans["rule"].startswith("capture >=" if stale else "within 0.1 %"), retrans
    # the kernels saw reinjections exactly when the capture shows some
    client, server = conn["counters"]["client"], conn["counters"]["server"]
    kernel_saw = sum(client.get(name, 0) for name in (
        "MPTcpExtMPTCPRetrans", "MPTcpExtRetransSegs", "MPTcpExtSubflowStale"))
    kernel_saw += server.get("MPTcpExtDuplicateData", 0)
    reinjected = connection["data"][0]["reinjected_bytes"]
    assert (reinjected > 0) == (kernel_saw > 0), (reinjected, client, server)
