"""`testbed remote run` for real: two OpenSSH servers in namespaces (lab.py), the controller in a
third, the project shipped over SFTP, `testbed matrix` shards run remotely with kernel MPTCP."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from testbed.matrix import load_matrix_spec, select
from testbed.net.state import pids_in_netns
from tests.integration.foundation.conftest import leftovers
from tests.integration.remote.lab import PROJECT, Lab, wait_until_gone

pytestmark = [pytest.mark.root, pytest.mark.slow]

CI_SPEC = PROJECT / "experiments" / "fallback_matrix_ci.toml"
RUN_ID = re.compile(r"\(run ([0-9a-f]{6})")


def expected_outcomes(rows: str) -> dict[tuple[str, str], str]:
    matrix = select(load_matrix_spec(CI_SPEC), rows, None)
    return {(c.row.name, c.pairing): c.expected for c in matrix.cells}


def run_ids(*roots: Path) -> set[str]:
    """Every experiment run the remote matrices started, from their cells' run.log files."""
    found: set[str] = set()
    for root in roots:
        for log in root.rglob("run.log"):
            found.update(RUN_ID.findall(log.read_text(errors="replace")))
    return found


def assert_nothing_left(lab: Lab, out: Path) -> None:
    ids = run_ids(out, lab.remote_dir)
    assert ids, "no run ids found: the check would prove nothing"
    assert {i: leftovers(i) for i in ids if leftovers(i)} == {}
    for name in lab.servers:  # only sshd itself remains on each host
        others = wait_until_gone_except_sshd(lab, name)
        assert others == [], f"processes left on {name}: {others}"


def wait_until_gone_except_sshd(lab: Lab, name: str, timeout_s: float = 30) -> list[int]:
    server = lab.servers[name]
    deadline = time.monotonic() + timeout_s
    while True:
        others = sorted(set(pids_in_netns(server.netns)) - set(server.sshd_pids()))
        if not others or time.monotonic() > deadline:
            return others
        time.sleep(0.2)


class Controller:
    """The controller as a background process whose stderr is read line by line."""

    def __init__(self, lab: Lab, *args: str) -> None:
        self.proc = subprocess.Popen(lab.controller_argv(*args), cwd=PROJECT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.err: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)

    def finish(self, timeout: float = 180) -> tuple[int, str, str]:
        stdout = self.proc.stdout.read() if self.proc.stdout else ""
        status = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return status, stdout, "".join(self.err)


def wait_for_remote_cell(lab: Lab, host: str, timeout_s: float = 90) -> Path:
    """A cell's run.log of `host` naming its run id, in the remote directory (same file
    system): the host's shard has really started building its experiment's network."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for log in lab.remote_dir.glob(f"runs/*/{host}/*/cells/*/*/run.log"):
            if RUN_ID.search(log.read_text(errors="replace")):
                return log
        time.sleep(0.1)
    raise AssertionError(f"no shard of {host} started within {timeout_s} s")


def kill_host(lab: Lab, name: str) -> None:
    """The host's SSH side dies: the listener and every session (the connection drops)."""
    pids = lab.servers[name].sshd_pids()
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


def test_two_hosts_share_the_matrix_and_merge_it(lab: Lab, tmp_path: Path) -> None:
    rows = "none,strip_mp_capable_syn,strip_mp_join,syn_firewall_reset"
    out = tmp_path / "out"
    started = time.monotonic()
    junit = tmp_path / "junit.xml"
    done = lab.controller(str(CI_SPEC), "--hosts", "h1,h2", "--out", str(out), "--rows", rows,
                          "--junit", str(junit))
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads((out / "matrix.json").read_text())
    assert doc["kind"] == "matrix" and doc["partial"] is False and doc["interrupted"] is False
    assert doc["summary"] == {"cells": 4, "run": 4, "as_expected": 4, "differ": 0, "errors": 0,
                              "no_expectation": 0, "not_applicable": 0, "not_run": 0, "degraded": 0,
                              "unstable": 0}
    assert {(c["row"], c["pairing"]): c["outcome"] for c in doc["cells"]} == expected_outcomes(rows)
    assert [c["row"] for c in doc["cells"]] == rows.split(",")  # the spec's order, not finishing order
    assert {c["host"] for c in doc["cells"]} == {"h1", "h2"}  # both hosts worked
    for cell in doc["cells"]:
        cell_dir = out / cell["dir"]
        assert cell["dir"] == f"{cell['host']}/cells/{cell['row']}/{cell['pairing']}"
        result = json.loads((cell_dir / "result.json").read_text())
        assert result["spec"]["name"] == f"fallback_matrix_ci/{cell['row']}/{cell['pairing']}"
        assert (cell_dir / "wire.json").exists() and (cell_dir / "capture.pcap").stat().st_size > 0
    remote = doc["remote"]
    ran = {host: sum(c["host"] == host for c in doc["cells"]) for host in ("h1", "h2")}
    assert {h: v["cells"] for h, v in remote["hosts"].items()} == ran
    assert remote["retries"] == [] and doc["environment"]["kernel"] == os.uname().release
    assert "| Middlebox | kernel \u2192 kernel |" in (out / "matrix.md").read_text()
    assert (out / "matrix.html").read_text().count("<tr>") == 5
    # a real matrix: `testbed compare` reads the merged file like a local one
    same = subprocess.run([sys.executable, "-m", "testbed.cli", "compare", str(out), str(out)],
                          capture_output=True, text=True, cwd=PROJECT, timeout=60)
    assert same.returncode == 0, same.stdout + same.stderr
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures")) == ("4", "0")
    # the merged tables are what `testbed report` re-derives from the hosts' result files
    tables = (out / "matrix.md").read_text()
    (out / "matrix.md").unlink()
    report = subprocess.run([sys.executable, "-m", "testbed.cli", "report", str(out)], capture_output=True,
                            text=True, cwd=PROJECT, timeout=120)
    assert report.returncode == 0, report.stderr
    assert (out / "matrix.md").read_text() == tables
    # progress on stderr: which host runs what, the bar with an ETA per cell
    assert re.search(r"\[remote\] h1: runs \S+ \u00d7 kernel-kernel", done.stderr)
    assert len(re.findall(r"\[remote\] #*-* \d/4 .*ETA", done.stderr)) == 4
    assert "4/4 cells as expected" in done.stdout
    assert (out / "h1" / "remote.log").read_text().count("testbed.remote.agent matrix") >= 1
    assert_nothing_left(lab, out)
    print(f"two-host run of 4 cells took {took:.1f} s")


def test_a_host_lost_mid_shard_is_reported_and_its_shard_rerun_elsewhere(lab: Lab, tmp_path: Path) -> None:
    rows = "none,strip_mp_capable_syn,strip_mp_join"
    out = tmp_path / "out"
    controller = Controller(lab, str(CI_SPEC), "--hosts", "h1,h2", "--out", str(out), "--rows", rows)
    cell_log = wait_for_remote_cell(lab, "h1")
    time.sleep(0.5)
    kill_host(lab, "h1")
    status, stdout, stderr = controller.finish()
    assert status == 0, stdout + stderr
    assert re.search(r"h1: FAILED during \S+ \u00d7 kernel-kernel: connection lost.*goes back to the queue",
                     stderr), stderr
    doc = json.loads((out / "matrix.json").read_text())
    assert doc["partial"] is False and doc["summary"]["as_expected"] == 3
    assert {(c["row"], c["pairing"]): c["outcome"] for c in doc["cells"]} == expected_outcomes(rows)
    assert {c["host"] for c in doc["cells"]} == {"h2"}
    lost_row = cell_log.parent.parent.name
    assert doc["remote"]["retries"] == [{"shard": doc["remote"]["retries"][0]["shard"], "failed_on": "h1",
                                         "reason": "connection lost while the shard ran"}]
    assert lost_row in doc["remote"]["retries"][0]["shard"]
    h1 = doc["remote"]["hosts"]["h1"]
    assert h1["status"].startswith("failed") and h1["cells"] == 0
    # the hang-up reached the remote matrix: it tore down like after Ctrl-C and said so
    remote_doc = json.loads((cell_log.parents[3] / "matrix.json").read_text())
    assert remote_doc["interrupted"] is True
    assert wait_until_gone(lab.servers["h1"].netns, 30) == []
    assert_nothing_left(lab, out)


def test_with_no_host_left_the_run_fails_clearly_and_keeps_partial_results(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "out"
    controller = Controller(lab, str(CI_SPEC), "--hosts", "h1", "--out", str(out),
                            "--rows", "none,strip_mp_capable_syn")
    wait_for_remote_cell(lab, "h1")
    kill_host(lab, "h1")
    status, stdout, stderr = controller.finish()
    assert status == 4, stdout + stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("testbed: no healthy host left for 2 of 2 shards (h1 failed: connection lost")
    assert "partial results in" in last and "Traceback" not in stderr
    doc = json.loads((out / "matrix.json").read_text())
    assert doc["partial"] is True and doc["summary"]["not_run"] == 2
    assert wait_until_gone(lab.servers["h1"].netns, 30) == []


def test_ctrl_c_stops_the_remote_runs_and_keeps_what_finished(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "out"
    controller = Controller(lab, str(CI_SPEC), "--hosts", "h1,h2", "--out", str(out),
                            "--rows", "none,strip_mp_capable_syn,strip_mp_join,syn_firewall_reset")
    wait_for_remote_cell(lab, "h1")
    wait_for_remote_cell(lab, "h2")
    controller.proc.send_signal(signal.SIGINT)
    status, stdout, stderr = controller.finish(timeout=90)
    assert status == 130, stdout + stderr
    assert "interrupted: stopping the remote runs" in stderr and "Traceback" not in stderr
    doc = json.loads((out / "matrix.json").read_text())
    assert doc["partial"] is True and doc["interrupted"] is True and doc["summary"]["not_run"] >= 2
    # the remote matrices got their Ctrl-C and tore down: an interrupted document (a host may
    # instead have been between two shards, or starting one), and nothing left on either host
    docs = [json.loads(p.read_text()) for p in lab.remote_dir.glob("runs/*/*/*/matrix.json")]
    assert any(d["interrupted"] for d in docs)
    assert_nothing_left(lab, out)


def test_spec_content_never_reaches_a_shell(lab: Lab, tmp_path: Path) -> None:
    """Shell syntax in the spec's file name, its texts and the remote directory: nothing runs,
    everything arrives literally. A row NAME with such syntax is refused by validation."""
    markers = tmp_path / "markers"
    markers.mkdir()
    tag = f"tbr{os.getpid()}"
    home_markers = [Path("/root") / f"{tag}-{i}" for i in (1, 2, 3)]
    evil_name = f"x;touch {tag}-1;$(touch {tag}-2)'`touch {tag}-3`\" \n.toml"
    spec_text = CI_SPEC.read_text().replace(
        'name = "fallback_matrix_ci"', f"name = \"ci $(touch {markers}/m4); touch {markers}/m5 '\"").replace(
        'label = "no middlebox (reference)"', f"label = \"`touch {markers}/m6`\\n$(touch {markers}/m7)\"")
    spec = tmp_path / evil_name
    spec.write_text(spec_text)
    remote_dir = tmp_path / f"rd $(touch {markers}/m8);touch {markers}/m9;'"
    out = tmp_path / "out"
    try:
        done = lab.controller(str(spec), "--hosts", "h1", "--out", str(out), "--rows", "none",
                              "--remote-dir", str(remote_dir))
        assert done.returncode == 0, done.stdout + done.stderr
        doc = json.loads((out / "matrix.json").read_text())
        assert doc["name"].startswith("ci $(touch") and doc["cells"][0]["outcome"] == "mptcp"
        assert doc["rows"][0]["label"].startswith("`touch")
        # the spec file arrived under its own name, in the literally named remote directory
        assert [p.name for p in remote_dir.glob("runs/*/h1/*") if p.is_file()] == [evil_name]
        assert sorted(p.name for p in markers.iterdir()) == []
        assert [p for p in home_markers if p.exists()] == []
    finally:
        for path in home_markers:
            path.unlink(missing_ok=True)
    bad_row = tmp_path / "bad_row.toml"
    bad_row.write_text(CI_SPEC.read_text().replace('name = "none"', f'name = "none;touch {markers}/m10"'))
    refused = lab.controller(str(bad_row), "--hosts", "h1", "--out", str(tmp_path / "out2"))
    assert refused.returncode == 2
    assert refused.stderr.startswith("testbed: ") and refused.stderr.count("\n") == 1
    assert "must be letters, digits" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "out2").exists() and sorted(p.name for p in markers.iterdir()) == []
