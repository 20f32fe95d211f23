"""Captures written by the simulator (`testbed stack sim --pcap`): the analysis of the core link
agrees exactly with the simulated endpoints, and DSS checksums verify on full payloads."""

from __future__ import annotations

import json
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
