"""`testbed matrix --jobs N` for real: a cell expected to reset runs in a child process with its
own namespaces, the measuring cell after it alone; same verdicts as one at a time, nothing left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.foundation.conftest import RUN_ID, leftovers

pytestmark = [pytest.mark.root]
if os.geteuid() != 0:
    pytest.skip("matrix integration tests need root (namespaces, tc, nft)", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[3]
CI_SPEC = ROOT / "experiments" / "fallback_matrix_ci.toml"


def test_jobs_runs_the_waiting_cell_in_a_child_and_keeps_verdicts(tmp_path: Path) -> None:
    out = tmp_path / "m"
    done = subprocess.run([sys.executable, "-m", "testbed.matrix", str(CI_SPEC), "--rows",
                           "none,syn_firewall_reset", "--jobs", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    doc = json.loads((out / "matrix.json").read_text())
    assert [(c["row"], c["outcome"], c["as_expected"]) for c in doc["cells"]] == [
        ("none", "mptcp", True), ("syn_firewall_reset", "reset", True)]
    assert not doc["partial"]
    run_ids = {match.group(1) for log in out.glob("cells/*/*/run.log")
               for match in [RUN_ID.search(log.read_text())] if match}
    assert len(run_ids) == 2 and all(leftovers(run_id) == [] for run_id in run_ids)


def test_jobs_below_one_is_a_one_line_error(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "testbed.matrix", str(CI_SPEC), "--jobs", "0",
                           "--out", str(tmp_path / "m")], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "--jobs must be at least 1" in done.stderr
