"""Captures written by the simulator (`testbed stack sim --pcap`): the analysis of the core link
agrees exactly with the simulated endpoints, and DSS checksums verify on full payloads."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from testbed.analyze.command import analyse_capture


def test_simulated_lossy_transfer_agrees_exactly(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "testbed.cli", "stack", "sim", "--size", "400k", "--checksum",
         "--path", "rate=20,delay=10,loss=1%", "--path", "rate=20,delay=20", "--seed", "3",
         "--pcap", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    sim = json.loads(done.stdout)
    assert sim["hash_ok"]
    analysis, _reader, notes = analyse_capture(tmp_path / "core.pcap", progress=False)
    [connection] = analysis.connections
    by_flow = {f"{s.addresses[0]}:{s.ports[0]}->{s.addresses[1]}:{s.ports[1]}": s
               for s in connection.subflows}
    for subflow in sim["subflows"]:
        assert by_flow[subflow["flow"]].dirs[0].bytes_acked == subflow["bytes"]
    assert connection.data[0].summary()["data_acked"] == sim["size"]
    assert connection.checksums and connection.checksum_checked > 0
    assert connection.violations == {} and notes == []


def test_agreement_checks_on_a_simulated_path_cut(tmp_path: Path) -> None:
    """testbed.analyze.agreement on a simulator capture with reinjections (path 1 cut while
    it carries data): bytes per subflow and the total exact, the reinjections the core link
    saw no more than the client stack counted (those sent onto the cut path never reach it),
    and, with tshark installed, the same connections, subflows, data ACKs and reinjected
    segments as tshark's MPTCP analysis."""
    from testbed.analyze.agreement import compare_sim

    done = subprocess.run(
        [sys.executable, "-m", "testbed.cli", "stack", "sim", "--size", "1M", "--path",
         "rate=20,delay=10", "--path", "rate=20,delay=30", "--at", "0.25:path1:cut", "--seed", "3",
         "--pcap", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    sim = json.loads(done.stdout)
    assert sim["hash_ok"] and sim["client_stats"]["counters"]["Reinjected"] > 0
    row = compare_sim(sim, tmp_path / "core.pcap")
    verdicts = {c["name"]: c["verdict"] for c in row["checks"]}
    assert row["agree"], [c for c in row["checks"] if c["verdict"] == "differ"]
    assert verdicts["total bytes"] == "agree"
    assert sum(name.startswith("subflow ") for name in verdicts) == 2
    reinjected = next(c for c in row["checks"] if c["name"].startswith("reinjections vs"))
    assert 0 < reinjected["ours"] <= reinjected["theirs"]
    if shutil.which("tshark"):
        tshark = next(c for c in row["checks"] if "reinjected segments (tshark)" in c["name"])
        assert tshark["theirs"] > 0
