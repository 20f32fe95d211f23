"""`testbed probe --target kernel@VERSION` on real namespaces, a real qemu guest (TCG) and real
packets: a few probes against a fetched kernel (one boot for all of them), the guest's own
MPTcpExt counters, its release in the report, and nothing left behind (namespaces, qemu)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from testbed import errors, kernels
from testbed.net.state import netns_inode
from testbed.probe.bed import ProbeBed
from testbed.probe.run import run_probes

pytestmark = [pytest.mark.slow, pytest.mark.root]

SELECTOR = "6.1"  # the oldest fetched kernel: the one most unlike the host's
# a handshake, a join judged by the guest's counters, and the target as client (a guest thread)
NAMES = ["mpc_handshake", "join_bad_ack_hmac", "client_mpc_keys"]


def _qemus_of(work_dir: str) -> list[str]:
    done = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True, check=False)
    return [line for line in done.stdout.splitlines() if work_dir in line]


def test_a_few_probes_against_a_fetched_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("nft", "mnexec", "ip", "qemu-system-x86_64")):
        pytest.skip("needs root, nft, ip, mnexec and qemu")
    try:
        release = kernels.find_fetched(SELECTOR, kernels.cache_dir()).release
    except errors.TestbedError as exc:
        pytest.skip(exc.message)
    monkeypatch.setenv("TESTBED_VM_ACCEL", os.environ.get("TESTBED_VM_ACCEL", "tcg"))
    created: list[str] = []
    work: list[str] = []

    def remember(bed: ProbeBed) -> None:
        assert bed.state is not None
        created.extend(bed.state.netns)
        work.append(bed.state.work_dir)

    rows = run_probes(f"kernel@{SELECTOR}", NAMES, tmp_path / "out", seed=5, before=remember)
    verdicts = {row["name"]: row["verdict"] for row in rows}
    assert verdicts == dict.fromkeys(NAMES, "pass"), [
        (r["name"], r["observed"], r["trace"]) for r in rows if r["verdict"] != "pass"]
    document = json.loads((tmp_path / "out" / "probes.json").read_text())
    detail = document["target_detail"]
    assert document["target"] == f"kernel@{SELECTOR}"
    assert detail["kernel_release"] == release != os.uname().release
    assert detail["vm"]["boot_to_listening_s"] > 0 and detail["mptcp_sysctls"]
    by_name = {row["name"]: row for row in document["probes"]}
    # the guest's counters, not the (socket-less) patch-panel namespace's
    assert by_name["mpc_handshake"]["counters"].get("MPTcpExtMPCapableSYNRX") == 1
    assert by_name["join_bad_ack_hmac"]["counters"].get("MPTcpExtMPJoinAckHMacFailure") == 1
    assert by_name["client_mpc_keys"]["counters"].get("MPTcpExtMPCapableSYNTX") == 1
    assert created and all(netns_inode(name) is None for name in created)
    assert work and _qemus_of(work[0]) == []
