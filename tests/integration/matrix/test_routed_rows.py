"""The proxy and the balancer as matrix rows, for real (issue 16, point 4): each pairing's cell
runs `testbed proxy`'s or `testbed lb`'s driver with the pairing's client stack and its proxy's
or backends' stack; a pairing neither driver can run (here tcp-kernel) is not applicable. The
tables show them, `testbed report` keeps them, `--resume` reuses them, nothing is left behind.
(experiments/fallback_matrix.toml has the same rows at full length.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.live_checks import live_problem

pytestmark = [pytest.mark.root]
if os.geteuid() != 0:
    pytest.skip("matrix integration tests need root (namespaces, tc, nft)", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[3]
SPEC = """
name = "routed_rows"
pairings = ["kernel-kernel", "python-python", "tcp-kernel"]
[base.topology]
name = "two_path"
[base.traffic]
bytes = 1000

[[routed]]
name = "proxy"
label = "converter proxy on the path"
spec = "{root}/experiments/proxy/goodput_kernel.toml"
traffic = {{ repeats = 1, bytes = 5000000 }}
expect = {{ default = "mptcp" }}

[[routed]]
name = "lb_hash"
label = "layer-4 balancer hashing every SYN"
spec = "{root}/experiments/lb/none_hash.toml"
traffic = {{ connections = 6, bytes = 1000000 }}
expect = {{ default = "subflow-rejected" }}
"""


def namespaces_of_the_testbed() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.startswith("tb-")}


def matrix(spec: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "testbed.matrix", str(spec), "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_proxy_and_balancer_rows_run_their_drivers_per_pairing(tmp_path: Path) -> None:
    problem = live_problem()
    if problem is not None:
        pytest.skip(problem)
    spec = tmp_path / "routed.toml"
    spec.write_text(SPEC.format(root=ROOT))
    out = tmp_path / "m"
    before = namespaces_of_the_testbed()
    done = matrix(spec, out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads((out / "matrix.json").read_text())
    cells = {(c["row"], c["pairing"]): c for c in doc["cells"]}
    assert len(cells) == 6
    for pairing in ("kernel-kernel", "python-python"):
        stack = pairing.split("-")[0]
        proxy = cells[("proxy", pairing)]
        assert (proxy["outcome"], proxy["integrity"], proxy["as_expected"]) == ("mptcp", "ok", True), proxy
        result = json.loads((out / proxy["dir"] / "result.json").read_text())
        assert (result["kind"], result["spec"]["client_stack"], result["spec"]["variant"]) == (
            "proxy", stack, stack)
        assert result["summary"]["both_paths"] == 1 and proxy["goodput_mbps"] > 10
        balancer = cells[("lb_hash", pairing)]
        assert (balancer["outcome"], balancer["as_expected"]) == ("subflow-rejected", True), balancer
        result = json.loads((out / balancer["dir"] / "result.json").read_text())
        assert (result["spec"]["client_stack"], result["spec"]["backend_stack"]) == (stack, stack)
        assert result["counts"]["intact"] == 6
        assert balancer["routed"]["outcome_classes"] == result["counts"]["outcome_classes"]
    for row in ("proxy", "lb_hash"):
        assert cells[(row, "tcp-kernel")]["status"] == "not-applicable"
    assert doc["summary"]["not_applicable"] == 2 and doc["summary"]["as_expected"] == 4

    table = (out / "matrix.md").read_text()
    assert "converter proxy on the path" in table and "l4_lb" in table and "- lb_hash: the balancer" in table
    reported = subprocess.run([sys.executable, "-m", "testbed.cli", "report", str(out)],
                              capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert reported.returncode == 0, reported.stderr[-2000:]
    again = json.loads((out / "matrix.json").read_text())
    assert [(c["row"], c["pairing"], c.get("outcome")) for c in again["cells"]] == [
        (c["row"], c["pairing"], c.get("outcome")) for c in doc["cells"]]

    resumed = matrix(spec, out, "--resume")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    reused = json.loads((out / "matrix.json").read_text())["cells"]
    assert all(c.get("reused") for c in reused if c.get("status") == "ok")
    assert namespaces_of_the_testbed() <= before
