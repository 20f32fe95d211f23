"""The proxy and the balancer as rows of the fallback matrix, for real (issue 16, point 4): the
proxy row's cells run `testbed proxy`'s driver with the pairing's client and proxy stacks, the
balancer row's kernel-kernel cell runs `testbed lb`'s; the tables show them beside the catalogue
rows, `testbed report` keeps them, `--resume` reuses them, and nothing is left behind."""

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
SPEC = ROOT / "experiments" / "fallback_matrix.toml"


def namespaces_of_the_testbed() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.startswith("tb-")}


def matrix(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "testbed.matrix", str(SPEC), "--rows", "proxy,lb_hash",
                           "--pairings", "kernel-kernel,python-python", "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_proxy_and_balancer_rows_run_their_drivers_per_pairing(tmp_path: Path) -> None:
    problem = live_problem()
    if problem is not None:
        pytest.skip(problem)
    out = tmp_path / "m"
    before = namespaces_of_the_testbed()
    done = matrix(out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads((out / "matrix.json").read_text())
    cells = {(c["row"], c["pairing"]): c for c in doc["cells"]}
    assert set(cells) == {("proxy", "kernel-kernel"), ("proxy", "python-python"),
                          ("lb_hash", "kernel-kernel"), ("lb_hash", "python-python")}
    for pairing in ("kernel-kernel", "python-python"):
        proxy = cells[("proxy", pairing)]
        assert (proxy["outcome"], proxy["integrity"], proxy["as_expected"]) == ("mptcp", "ok", True), proxy
        assert proxy["routed"]["integrity_counts"] == {"ok": 2}
        result = json.loads((out / proxy["dir"] / "result.json").read_text())
        stack = pairing.split("-")[0]
        assert (result["kind"], result["spec"]["client_stack"], result["spec"]["variant"]) == (
            "proxy", stack, stack)
        assert result["summary"]["both_paths"] == 2 and proxy["goodput_mbps"] > 10
    balancer = cells[("lb_hash", "kernel-kernel")]
    assert (balancer["outcome"], balancer["as_expected"]) == ("subflow-rejected", True), balancer
    counts = json.loads((out / balancer["dir"] / "result.json").read_text())["counts"]
    assert counts["joins_refused"] >= 1 and balancer["routed"]["outcome_classes"] == counts["outcome_classes"]
    assert cells[("lb_hash", "python-python")]["status"] == "not-applicable"
    assert doc["summary"]["not_applicable"] == 1 and doc["summary"]["as_expected"] == 3

    table = (out / "matrix.md").read_text()
    assert "converter proxy on the path" in table and "l4_lb" in table and "- lb_hash: the balancer" in table
    reported = subprocess.run([sys.executable, "-m", "testbed.cli", "report", str(out)],
                              capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert reported.returncode == 0, reported.stderr[-2000:]
    again = json.loads((out / "matrix.json").read_text())
    assert [(c["row"], c["pairing"], c.get("outcome")) for c in again["cells"]] == [
        (c["row"], c["pairing"], c.get("outcome")) for c in doc["cells"]]

    resumed = matrix(out, "--resume")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    reused = json.loads((out / "matrix.json").read_text())["cells"]
    assert all(c.get("reused") for c in reused if c.get("status") == "ok")
    assert namespaces_of_the_testbed() <= before
