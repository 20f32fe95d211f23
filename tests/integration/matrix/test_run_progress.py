"""`testbed run` for real: the transfer bar with its ETA on stderr without a TTY, and Ctrl-C
(SIGTERM takes the same path) keeping a partial result.json marked interrupted."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.foundation.conftest import RUN_ID, leftovers

pytestmark = [pytest.mark.root, pytest.mark.slow]
if os.geteuid() != 0:
    pytest.skip("testbed run needs root (namespaces, tc, nft)", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[3]
DEMO_SPEC = ROOT / "experiments" / "two_path_kernel.toml"


def sized_spec(tmp_path: Path, size: int) -> Path:
    """The demo spec with a sized upload (the bar then estimates from the measured rate)."""
    text = DEMO_SPEC.read_text().replace("seconds = 10", f"bytes = {size}")
    assert f"bytes = {size}" in text
    spec = tmp_path / "sized.toml"
    spec.write_text(text)
    return spec


def test_interrupted_run_keeps_a_partial_result_and_shows_its_eta(tmp_path: Path) -> None:
    out = tmp_path / "run"
    spec = sized_spec(tmp_path, 2_000_000_000)  # ~85 s at 188 Mbit/s: interrupted long before
    proc = subprocess.Popen([sys.executable, "-m", "testbed.cli", "run", str(spec), "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(15)  # set-up, then a first line (a tenth, or 10 s) with bytes measured
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    bar_lines = [line for line in stderr.splitlines() if line.startswith("[two_path_kernel] ")]
    assert bar_lines, stderr
    assert "\r" not in stderr  # no TTY: plain lines
    # the first line with bytes measured (a heartbeat line may come before the first sample)
    match = next((m for line in bar_lines
                  if (m := re.search(r"(\d+) MB/2 GB\s+(\d+)%.*ETA (\d+):(\d\d)", line))), None)
    assert match, bar_lines
    eta_s = int(match.group(3)) * 60 + int(match.group(4))
    assert int(match.group(1)) > 0 and 30 <= eta_s <= 300  # ~1.8 GB left at ~23 MB/s (or slower)
    result = json.loads((out / "result.json").read_text())
    connection = result["connections"][0]
    assert result["interrupted"] is True and result["expectations"]["passed"] is False
    assert 100_000_000 < connection["bytes"] < 2_000_000_000
    # the oracle read the receiver's kept bytes: a correct prefix of the original stream
    assert connection["integrity"] == "truncated", connection["integrity_verdict"]
    assert any(line.startswith("integrity truncated:") and "nothing wrong" in line
               for line in connection["evidence"])
    assert "partial result in" in stdout
    run_id = RUN_ID.search(stdout)
    assert run_id and leftovers(run_id.group(1)) == []
