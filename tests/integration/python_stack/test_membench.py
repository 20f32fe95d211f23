"""`testbed stack membench` end to end, on a short transfer: it reads the python process's RSS
while the bytes really go, and what it prints follows from the reads it recorded.

No memory figure is asserted here beyond sanity (the command reports figures; the goal is
judged by running it for 10 GB, docs/benchmarks.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from testbed.bench_memory import summarize
from testbed.errors import RunFailed

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces)")


def test_membench_reads_the_rss_of_a_real_transfer() -> None:
    size = 600_000_000  # at least eight reads, two a second, with either core (native.py)
    out = subprocess.run([sys.executable, "-m", "testbed.bench_memory", "--bytes", str(size),
                          "--json"], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["intact"] is True and result["bytes"] == size
    reads = result["rss_samples_kib"]
    rss = result["rss"]
    assert rss["reads"] == len(reads) >= 8
    # A python process with the stack loaded holds well over 10 MB; the peak bounds every read.
    assert min(reads) * 1024 / 1e6 > 10
    assert rss["peak_mb"] >= round(max(reads) * 1024 / 1e6, 1)
    count = len(reads)
    early = max(reads[count // 10:max(count // 4, count // 10 + 1)]) * 1024 / 1e6
    late = max(reads[count - count // 4:]) * 1024 / 1e6
    assert rss["early_max_mb"] == round(early, 1) and rss["late_max_mb"] == round(late, 1)
    assert rss["growth"] == round(late / early, 3)
    assert rss["meets_peak"] == (rss["peak_mb"] <= 48.0)


def test_a_transfer_too_short_to_judge_is_said_so() -> None:
    with pytest.raises(RunFailed, match="too short"):
        summarize([(0.0, 30000), (1.0, 31000)], 32000)


def test_bad_sizes_are_one_line_errors() -> None:
    out = subprocess.run([sys.executable, "-m", "testbed.bench_memory", "--bytes", "lots"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out
    assert "--bytes" in out.stderr and "Traceback" not in out.stderr
