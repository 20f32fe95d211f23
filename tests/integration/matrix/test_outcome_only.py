"""A matrix's [outcome_only].stall_timeout_s for real: a cell that stalls (the DSS checksum row,
kernel-kernel: the Linux client stops sending after MP_FAIL) ends after the shorter no-progress
timeout with the class the full-length run gives (mp-fail · truncated), nothing left behind."""

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
SPEC = """name = "stall_short"
pairings = ["kernel-kernel"]
rows_from = "{rows}"

[outcome_only]
stall_timeout_s = 3.0

[base.topology]
name = "two_path"

[base.traffic]
bytes = 20000000
direction = "upload"

[base.mptcp]
subflows = 2
client_subflow_endpoints = true
"""


def test_a_stalled_cell_ends_after_the_stall_timeout_with_its_full_length_class(
        tmp_path: Path) -> None:
    spec = tmp_path / "stall_short.toml"
    spec.write_text(SPEC.format(rows=ROOT / "experiments" / "fallback_matrix.toml"))
    out = tmp_path / "m"
    done = subprocess.run([sys.executable, "-m", "testbed.matrix", str(spec), "--rows",
                           "rewrite_payload_dss_checksum", "--out", str(out)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    cell = json.loads((out / "matrix.json").read_text())["cells"][0]
    assert (cell["outcome"], cell["integrity"], cell["as_expected"]) == ("mp-fail", "truncated", True)
    assert cell["outcome_only"] == {"timeout_s": 3.0}
    # the stall was recognised by the endpoints' own no-progress timeout, now 3 s
    assert any("no progress for 3 s" in line for line in cell["evidence"]), cell["evidence"]
    run_log = (out / "cells/rewrite_payload_dss_checksum/kernel-kernel/run.log").read_text()
    match = RUN_ID.search(run_log)
    assert match and leftovers(match.group(1)) == []
