"""The CI matrix for real (root, namespaces, kernel MPTCP, inline middleboxes), then `compare`
against itself and against an edited copy, and `report` on it; plus Ctrl-C in the middle."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.integration.foundation.conftest import RUN_ID, leftovers

pytestmark = [pytest.mark.root, pytest.mark.slow]
if os.geteuid() != 0:
    pytest.skip("matrix integration tests need root (namespaces, tc, nft)", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[3]
CI_SPEC = ROOT / "experiments" / "fallback_matrix_ci.toml"
# The committed baseline (refresh: README, "Regression baseline"). Outcomes must match exactly;
# goodput may fall by up to BASELINE_TOLERANCE_PCT: wide enough for a loaded 2-core CI VM (1 s
# uploads, the inline middlebox process sharing the CPU), narrow enough that losing a subflow
# in the reference row (188 -> 94 Mbit/s, -50 %) fails.
BASELINE = ROOT / "experiments" / "baselines" / "fallback_matrix_ci.json"
BASELINE_TOLERANCE_PCT = 40


def python_module(*args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


@pytest.fixture(scope="module")
def ci_matrix(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("ci_matrix")
    started = time.monotonic()
    done = python_module("testbed.matrix", str(CI_SPEC), "--out", str(out))
    print(f"CI matrix took {time.monotonic() - started:.1f} s")
    return out, done


def test_ci_matrix_meets_every_expectation(ci_matrix: tuple[Path, subprocess.CompletedProcess]) -> None:
    out, done = ci_matrix
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads((out / "matrix.json").read_text())
    assert doc["partial"] is False and doc["summary"]["as_expected"] == doc["summary"]["cells"] == 6
    outcomes = {c["row"]: c["outcome"] for c in doc["cells"]}
    assert outcomes == {"none": "mptcp", "strip_mp_capable_syn": "fallback-syn",
                        "strip_mp_join": "subflow-rejected", "strip_dss_all": "fallback-infinite-map",
                        "syn_firewall_reset": "reset", "rewrite_payload": "mptcp"}
    # the second axis: the ALG's edit arrives as plain TCP would deliver it (no DSS checksum, one
    # subflow: MPTCP cannot notice), every other cell delivers the original stream
    integrity = {c["row"]: c["integrity"] for c in doc["cells"]}
    assert integrity == {**{row: "ok" for row in outcomes}, "rewrite_payload": "alg-edited"}
    assert "(1 edit(s) logged)" in next(c for c in doc["cells"] if c["row"] == "rewrite_payload")[
        "integrity_verdict"]["description"]
    by_row = {c["row"]: c for c in doc["cells"]}
    assert by_row["none"]["subflows_carrying"] == 2 and by_row["none"]["goodput_mbps"] > 120
    assert 50 < by_row["strip_mp_capable_syn"]["goodput_mbps"] < 100  # one 100 Mbit/s path
    for cell in doc["cells"]:
        assert (out / cell["dir"] / "result.json").exists()
        assert (out / cell["dir"] / "wire.json").exists() and "wire_error" not in cell
    # what crossed the wire, read from each cell's capture by tshark, agrees with the outcome
    assert "wire: SYN sent with MP_CAPABLE, SYN/ACK arrived without it (plain TCP)" in \
        by_row["strip_mp_capable_syn"]["wire"]
    join_wire = by_row["strip_mp_join"]["wire"]
    assert any("MP_JOIN SYN(s) sent, 0 SYN/ACK(s) with MP_JOIN received" in w for w in join_wire)
    assert any("without a DSS mapping" in w for w in by_row["strip_dss_all"]["wire"])
    # progress went to stderr, one line per cell without a TTY, with an ETA
    progress = [line for line in done.stderr.splitlines() if line.startswith("[matrix]")]
    assert len(progress) == 6 and all("ETA" in line for line in progress)
    assert "| Middlebox | kernel \u2192 kernel |" in (out / "matrix.md").read_text()
    assert (out / "matrix.html").read_text().count("<tr>") == 7


def test_compare_with_itself_passes_and_an_edit_fails(ci_matrix, tmp_path: Path) -> None:
    out, _ = ci_matrix
    junit = tmp_path / "junit.xml"
    same = python_module("testbed.compare", str(out), str(out), "--junit", str(junit))
    assert same.returncode == 0, same.stdout + same.stderr
    assert ET.parse(junit).getroot().find("testsuite").get("tests") == "6"
    edited = tmp_path / "edited"
    edited.mkdir()
    doc = json.loads((out / "matrix.json").read_text())
    doc["cells"][1]["outcome"] = "mptcp"
    (edited / "matrix.json").write_text(json.dumps(doc))
    worse = python_module("testbed.compare", str(out), str(edited), "--junit", str(junit))
    assert worse.returncode == 1
    assert "class fallback-syn -> mptcp" in worse.stdout
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == "1"


def test_fresh_run_matches_the_committed_baseline(ci_matrix, tmp_path: Path) -> None:
    """The CI gate itself: `testbed compare BASELINE CURRENT --tolerance N --junit FILE`."""
    out, _ = ci_matrix
    junit = tmp_path / "baseline.junit.xml"
    done = python_module("testbed.compare", str(BASELINE), str(out), "--tolerance",
                         str(BASELINE_TOLERANCE_PCT), "--junit", str(junit))
    assert done.returncode == 0, done.stdout + done.stderr
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("tests") == "6" and suite.get("failures") == "0"
    # the baseline is a real run of this spec, every cell as expected, not an empty file that
    # would pass any comparison
    baseline = json.loads(BASELINE.read_text())
    assert baseline["name"] == "fallback_matrix_ci" and baseline["partial"] is False
    assert baseline["summary"]["as_expected"] == baseline["summary"]["cells"] == 6
    assert {c["row"] for c in baseline["cells"]} == {c["row"] for c in json.loads(
        (out / "matrix.json").read_text())["cells"]}
    assert all(c["goodput_mbps"] > 50 for c in baseline["cells"] if c["outcome"] != "reset")


def test_the_gate_fails_on_a_lost_subflow(ci_matrix, tmp_path: Path) -> None:
    """The tolerance is narrow enough: the reference row at half its goodput is a regression."""
    out, _ = ci_matrix
    halved = tmp_path / "halved"
    halved.mkdir()
    doc = json.loads((out / "matrix.json").read_text())
    reference = next(c for c in doc["cells"] if c["row"] == "none")
    reference["goodput_mbps"] = json.loads(BASELINE.read_text())["cells"][0]["goodput_mbps"] / 2
    (halved / "matrix.json").write_text(json.dumps(doc))
    done = python_module("testbed.compare", str(BASELINE), str(halved), "--tolerance",
                         str(BASELINE_TOLERANCE_PCT))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "none" in done.stdout and "goodput -50.0%" in done.stdout


def test_report_rederives_tables_and_plots(ci_matrix, tmp_path: Path) -> None:
    out, _ = ci_matrix
    copy = Path(shutil.copytree(out, tmp_path / "copy"))
    original_md = (copy / "matrix.md").read_text()
    (copy / "matrix.md").unlink()
    (copy / "matrix.html").unlink()
    done = python_module("testbed.report", str(copy))
    assert done.returncode == 0, done.stderr
    assert (copy / "matrix.md").read_text() == original_md
    for cell in json.loads((copy / "matrix.json").read_text())["cells"]:
        cell_dir = copy / cell["dir"]
        assert (cell_dir / "throughput.png").read_bytes().startswith(b"\x89PNG")
        assert json.loads((cell_dir / "plots.json").read_text())["plots"][0]["data"] == "timeseries.csv"
        assert cell["outcome"] in (cell_dir / "summary.md").read_text()


def test_ctrl_c_keeps_a_partial_matrix_and_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "partial"
    proc = subprocess.Popen([sys.executable, "-m", "testbed.matrix", str(CI_SPEC), "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until the first cell is done, then interrupt the second
        if (out / "matrix.json").exists() and json.loads((out / "matrix.json").read_text())["cells"]:
            break
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    doc = json.loads((out / "matrix.json").read_text())
    assert doc["partial"] is True and doc["interrupted"] is True
    assert 1 <= len(doc["cells"]) < 6 and doc["summary"]["not_run"] == 6 - len(doc["cells"])
    assert "interrupted after" in stderr
    assert "PARTIAL" in (out / "matrix.md").read_text()
    # the interrupted cell tore down what it built: nothing of any run this matrix started is left
    run_ids = {match.group(1) for log in out.glob("cells/*/*/run.log")
               for match in [RUN_ID.search(log.read_text())] if match}
    # (a cell interrupted before its "building" line had created nothing yet: the runner logs it
    # before building the network)
    assert run_ids and all(leftovers(run_id) == [] for run_id in run_ids)
