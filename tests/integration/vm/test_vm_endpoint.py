"""Issue 14 points 2 and 7: one real cell per fetched kernel with that kernel as an endpoint in a
VM attached to the two_path topology, against the host's kernel in the other role.

Real namespaces, veths, taps, qemu (TCG) and packets: the result must name the guest's release,
carry the guest's MPTcpExt counters (the patch-panel namespace has no sockets), show both
subflows, and leave no qemu behind. Each cell boots one VM (~30-80 s under TCG)."""

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

PROJECT = Path(__file__).resolve().parents[3]

pytestmark = [pytest.mark.slow, pytest.mark.root]

SPEC = """\
name = "vm_endpoint_{role}_{tag}"
seed = 3
[topology]
name = "two_path"
[topology.params]
rate_mbit = 5
delay_ms = 5
[[endpoints]]
role = "client"
stack = "kernel"
{client_kernel}
[[endpoints]]
role = "server"
stack = "kernel"
{server_kernel}
[traffic]
bytes = 400000
direction = "{direction}"
timeout_s = 60
[mptcp]
subflows = 2
[expect]
outcome = "mptcp"
subflows = 2
"""

# (role on the VM, kernel selector, direction): a VM booted for one run, both roles; 6.12 runs
# in test_vm_pool.py (one boot for a matrix, both roles, upload), so each fetched version once
CELLS = [("server", "6.1", "download"), ("client", "newest", "download")]


def _qemus_on_taps() -> list[str]:
    done = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True, check=False)
    return [line for line in done.stdout.splitlines() if "ifname=tbtap" in line]


@pytest.mark.parametrize(("role", "selector", "direction"), CELLS)
def test_a_cell_with_one_endpoint_on_a_fetched_kernel(role: str, selector: str, direction: str,
                                                       tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (namespaces, taps, the VM)")
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu is not installed (`make setup`)")
    try:
        kernel = kernels.find_fetched(selector, kernels.cache_dir())
    except SpecError as exc:
        pytest.skip(f"{exc.message}")
    kernel_line = f'kernel = "{selector}"'
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(role=role, tag=selector.replace(".", ""), direction=direction,
                                client_kernel=kernel_line if role == "client" else "",
                                server_kernel=kernel_line if role == "server" else ""))
    env = {**os.environ, "TESTBED_VM_ACCEL": os.environ.get("TESTBED_VM_ACCEL", "tcg")}
    argv = [sys.executable, "-m", "testbed.cli", "run", str(spec), "--out", str(tmp_path / "out")]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=PROJECT, timeout=420, check=False,
                          env=env)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    connection = result["connections"][0]
    assert connection["outcome"] == "mptcp" and connection["integrity"] == "ok"
    assert len([s for s in connection["subflows"] if s["bytes"] > 0]) == 2
    record = result["endpoints"][role]
    assert record["kernel"] == kernel.release != result["environment"]["kernel"]
    assert record["vm"]["boot_s"] > 0 and record["vm"]["setup_problems"] == []
    assert isinstance(record["vm"]["cpu_bound"], bool) and record["vm"]["qemu_cpu_s"] is not None
    other = "server" if role == "client" else "client"
    assert result["endpoints"][other]["kernel"] == result["environment"]["kernel"]
    # the guest's own counters: its MP_CAPABLE handshake and the second subflow's MP_JOIN
    counters = connection["counters"][role]
    if role == "client":
        assert counters.get("MPTcpExtMPCapableSYNTX", 0) >= 1 and counters.get("MPTcpExtMPJoinSynTx", 0) >= 1
    else:
        assert counters.get("MPTcpExtMPCapableSYNRX", 0) >= 1 and counters.get("MPTcpExtMPJoinSynRx", 0) >= 1
    assert _qemus_on_taps() == []
