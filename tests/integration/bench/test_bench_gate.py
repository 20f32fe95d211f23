"""The suite's benchmark gate: `testbed bench --quick --compare` against the committed baseline.

Real measurements on real namespaces; the figures are ratios to references measured in the
same run (a calibration loop, plain forwarding, the kernel bridge), so the machine's speed
cancels out and the baseline's tolerances (docs/benchmarks.md) absorb a loaded CI machine. A
change that halves a fast path falls below its tolerance and fails here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.bench import record

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces)"),
              pytest.mark.slow]
BASELINE = Path(__file__).resolve().parents[3] / "experiments" / "baselines" / "bench_quick.json"


def test_quick_gate_passes_against_the_committed_baseline(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "bench", "--quick", "--out",
                           str(out), "--compare", str(BASELINE)], capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "bench gate: PASS" in done.stdout
    doc = record.load(out)
    baseline = record.load(BASELINE)
    assert doc["quick"] is True and set(doc["figures"]) >= {
        name for name, figure in baseline["figures"].items() if figure["gated"]}
    strip = doc["figures"]["inline.strip_options.vs_plain"]["detail"]
    # the strip box really rewrote the flow (as tests/integration/middleboxes checks it)
    for changed, seen in strip["packets_changed_of_seen"]:
        assert seen > 1000 and changed >= 0.98 * seen
