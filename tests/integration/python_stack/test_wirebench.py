"""`testbed stack wirebench` end to end: it runs both stacks and reports figures it measured.

No speed is asserted (benchmarks print figures); what must hold is that both transfers were
real (two subflows each carried data, the bytes arrived intact) and that the printed ratio is
the ratio of the medians it printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces)")


def test_wirebench_measures_both_stacks_on_two_path() -> None:
    out = subprocess.run([sys.executable, "-m", "testbed.bench_stack", "--seconds", "1.5",
                          "--rounds", "1", "--json"], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    for stack in ("kernel", "python"):
        entry = result[stack]
        assert entry["all_intact"] is True
        assert entry["subflows"] == 2
        assert all(rate > 0 for rate in entry["per_subflow_mbit"]), entry
        assert entry["goodput_mbps"] > 0
    assert result["ratio"] == round(result["python"]["goodput_mbps"] / result["kernel"]["goodput_mbps"], 3)
    cpu = result["python"]["driver"]["cpu"]
    assert cpu["user_s"] > 0 and cpu["wall_s"] > 1.0


def test_wirebench_rejects_bad_arguments_in_one_line() -> None:
    out = subprocess.run([sys.executable, "-m", "testbed.bench_stack", "--rounds", "0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "--rounds: must be >= 1" in out.stderr and "Traceback" not in out.stderr
