"""`testbed probe` on real namespaces: a handful of probes against the host kernel and the
python stack (raw packets, real kernels), a target that never answers, and cleanup."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from testbed.net.state import netns_inode
from testbed.probe.bed import ProbeBed, ProbeError
from testbed.probe.run import run_probes

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("nft", "mnexec", "ip")),
    reason="needs root, nft, ip and mnexec")

# one of each kind: handshake, fallback, join, checksum, close, data-level
BOTH = ["mpc_handshake", "mpc_flag_b", "join_bad_ack_hmac", "dss_checksum_bad",
        "dss_stripped_after_data", "fastclose_wrong_key", "client_join_bad_synack_hmac"]


def _remember(names: list[str]):
    def before(bed: ProbeBed) -> None:
        assert bed.state is not None
        names.extend(bed.state.netns)
    return before


@pytest.mark.parametrize("target", ["kernel", "python"])
def test_handful_of_probes(tmp_path: Path, target: str) -> None:
    created: list[str] = []
    names = BOTH + (["dss_checksum_missing"] if target == "python" else [])
    rows = run_probes(target, names, tmp_path / target, seed=7, before=_remember(created))
    verdicts = {row["name"]: row["verdict"] for row in rows}
    assert verdicts == dict.fromkeys(names, "pass"), [
        (r["name"], r["observed"], r["trace"]) for r in rows if r["verdict"] != "pass"]
    document = json.loads((tmp_path / target / "probes.json").read_text())
    assert document["format"] == "mptcp-testbed-probes" and document["version"] == 1
    assert document["target"] == target and document["target_detail"]
    for row in document["probes"]:
        assert row["trace"] and row["rfc"].startswith("RFC 8684")
        assert row["group"] in ("signalling", "fallback", "congestion")
    assert "| join_bad_ack_hmac |" in (tmp_path / target / "probes.md").read_text()
    if target == "kernel":  # the target namespace's counters moved as the scenarios say
        by_name = {row["name"]: row for row in document["probes"]}
        assert by_name["join_bad_ack_hmac"]["counters"].get("MPTcpExtMPJoinAckHMacFailure") == 1
        assert by_name["dss_stripped_after_data"]["counters_check"]["agree"]
        assert by_name["dss_checksum_bad"]["counters"].get("MPTcpExtDataCsumErr", 0) >= 1
        assert by_name["client_join_bad_synack_hmac"]["counters_check"]["agree"]
    assert created and all(netns_inode(name) is None for name in created)


def test_silent_target_is_one_error_and_leaves_nothing(tmp_path: Path) -> None:
    created: list[str] = []

    def pause(bed: ProbeBed) -> None:
        _remember(created)(bed)
        bed.pause_target()

    with pytest.raises(ProbeError, match="did not answer a SYN"):
        run_probes("python", ["mpc_handshake"], tmp_path / "out", before=pause)
    assert not (tmp_path / "out").exists()
    assert created and all(netns_inode(name) is None for name in created)
