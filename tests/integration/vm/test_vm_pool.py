"""Issue 14 points 2 and 7: a matrix boots each fetched kernel once (testbed.vm_pool) and every
cell naming it runs as a job of that VM, in either role.

Real namespaces, veths, bridges, qemu (TCG) and packets: two cells (the 6.12 kernel as client,
then as server, against the host's kernel) must come from one boot of one VM, each with the
guest's own counters (a fresh guest namespace per cell: the second starts from zero), and
nothing of the pool may be left afterwards (no qemu, no namespace)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testbed import kernels
from testbed.errors import SpecError
from testbed.net.state import NETNS_DIR, STATE_DIR

PROJECT = Path(__file__).resolve().parents[3]

pytestmark = [pytest.mark.slow, pytest.mark.root]

MATRIX = """\
name = "vm_pool"
seed = 3
pairings = ["kernel@6.12-kernel", "kernel-kernel@6.12"]
[base.topology]
name = "two_path"
[base.topology.params]
rate_mbit = 5
delay_ms = 5
[base.traffic]
bytes = 400000
direction = "upload"
timeout_s = 90
[base.mptcp]
subflows = 2
client_subflow_endpoints = true
[[middleboxes]]
name = "none"
chain = []
expect = { default = "mptcp" }
"""


def _processes_mentioning(text: str) -> list[str]:
    """Processes whose command line names `text` (the pool's directory: its vng and qemu)."""
    done = subprocess.run(["pgrep", "-af", text], capture_output=True, text=True, check=False)
    return [line for line in done.stdout.splitlines() if "pgrep" not in line]


def test_one_boot_serves_both_roles_of_a_matrix(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (namespaces, taps, the VM)")
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu is not installed (`make setup`)")
    try:
        kernel = kernels.find_fetched("6.12", kernels.cache_dir())
    except SpecError as exc:
        pytest.skip(f"{exc.message}")
    spec = tmp_path / "matrix.toml"
    spec.write_text(MATRIX)
    env = {**os.environ, "TESTBED_VM_ACCEL": os.environ.get("TESTBED_VM_ACCEL", "tcg")}
    env.pop("TESTBED_VM_REUSE", None)
    argv = [sys.executable, "-m", "testbed.cli", "matrix", str(spec), "--out", str(tmp_path / "out")]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=PROJECT, timeout=600, check=False,
                          env=env)
    said = [line for line in done.stdout.splitlines() if line.startswith("  ")]  # differs/error lines
    assert done.returncode == 0, (said, done.stderr[-2000:])
    pools = []
    for pairing, role in (("kernel@6.12-kernel", "client"), ("kernel-kernel@6.12", "server")):
        result = json.loads((tmp_path / "out" / "cells" / "none" / pairing / "result.json").read_text())
        connection = result["connections"][0]
        assert connection["outcome"] == "mptcp" and connection["integrity"] == "ok"
        assert len([s for s in connection["subflows"] if s["bytes"] > 0]) == 2
        vm = result["endpoints"][role]["vm"]
        assert vm["kernel"] == kernel.release and vm["setup_problems"] == []
        assert vm["boot_s"] < 30, vm  # handed to a running VM, not booted
        pools.append(vm["reused_vm"])
        counters = connection["counters"][role]  # the guest's, from a fresh namespace
        assert counters.get("MPTcpExtMPJoinSynTx" if role == "client" else "MPTcpExtMPJoinSynRx", 0) >= 1
        assert counters.get("MPTcpExtMPCapableSYNTX" if role == "client" else "MPTcpExtMPCapableSYNRX") == 1
    assert pools[0] == pools[1] and pools[0]["boot_s"] > 0  # one VM, booted once
    pool_id = pools[0]["netns"].split("-")[1]  # tb-<pool id>-vm0; other jobs' VMs are left alone
    assert _processes_mentioning(str(STATE_DIR / pool_id)) == []
    assert not (NETNS_DIR / pools[0]["netns"]).exists()
