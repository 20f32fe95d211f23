"""`testbed soak --minutes 3`, the suite's variant of the 30-minute soak (issue 13, point 3):
every criterion holds, and soak.json says so with evidence that can be checked here against
each transfer's own result.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_a_three_minute_soak_passes_every_criterion(tmp_path: Path) -> None:
    out = tmp_path / "soak"
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "soak", "--minutes", "3",
                           "--out", str(out), "--seed", "2"], capture_output=True, text=True,
                          timeout=400, check=False)
    document = json.loads((out / "soak.json").read_text())
    failed = {c["name"]: c["problems"] for c in document["criteria"] if not c["passed"]}
    assert done.returncode == 0, (failed, done.stdout[-3000:], done.stderr[-3000:])
    assert (document["format"], document["version"], document["passed"]) == ("testbed-soak", 1, True)
    assert [c["name"] for c in document["criteria"]] == [
        "transfers", "verdicts", "processes", "rss", "fds", "leaks", "abuse"]

    transfers = document["transfers"]
    assert len(transfers) >= 5
    assert {t["pairing"] for t in transfers} >= {"python->kernel", "kernel->python",
                                                   "kernel->kernel", "python<-kernel"}
    for transfer in transfers:
        truth = transfer["truth"]
        assert transfer["verdict"] == truth["integrity"]
        result = json.loads(Path(transfer["result"]).read_text())
        connection = result["connections"][0]
        receiver = "server" if transfer["direction"] == "upload" else "client"
        assert connection["integrity"] == transfer["verdict"]
        assert connection["sha256"][receiver] == truth["received_sha256"]
        assert connection["bytes"] == truth["received_bytes"]
        if truth["integrity"] == "ok":
            sender = "client" if receiver == "server" else "server"
            assert connection["sha256"][sender] == truth["received_sha256"]

    judged = {(p["label"], p["node"]) for p in document["processes"] if p["judged"]}
    assert {("testbed.inline", "mb_a"), ("testbed.inline", "mb_b"), ("testbed soak", "root")} <= judged
    for process in document["processes"]:
        assert len(process["series"]["rss_kib"]) == process["samples"]
    inline = [p for p in document["processes"] if p["label"] == "testbed.inline"]
    assert all(p["samples"] >= 170 for p in inline)  # one a second for three minutes

    after = document["census"]["after"]
    assert after["namespaces"] == [] and after["processes"] == []
    assert after["soak_fds"] <= document["census"]["before"]["soak_fds"]
    assert any(e.get("up") is False for e in document["timeline"])
    assert "soak" in done.stdout and "verdicts" in done.stdout
