"""driver.memory: with the mmap threshold fixed, a large buffer freed after another large one
goes back to the system; with glibc's moving threshold it stays in the process's heap.

Run in fresh interpreters (the setting is process-wide), on the real C library."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_PROGRAM = """
import json, sys
from testbed.mptcp.driver.memory import fix_mmap_threshold

def rss_kib():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS'):
            return int(line.split()[1])

fixed = fix_mmap_threshold() if sys.argv[1] == 'fixed' else None
block = bytearray(16 << 20)  # served by mmap at the start either way
del block                    # glibc's moving threshold now rises to 16 MiB
keep = [bytes(100) for _ in range(1000)]
before = rss_kib()
block = bytearray(16 << 20)  # moving threshold: from the heap; fixed: mmap again
del block
print(json.dumps({'fixed': fixed, 'kept_kib': rss_kib() - before}))
"""


def _run(mode: str) -> dict[str, int | None]:
    result = subprocess.run([sys.executable, "-c", _PROGRAM, mode], capture_output=True,
                            text=True, timeout=60, check=True)
    data: dict[str, int | None] = json.loads(result.stdout)
    return data


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc on Linux")
def test_a_freed_large_buffer_is_returned_only_with_the_fixed_threshold() -> None:
    moving, fixed = _run("moving"), _run("fixed")
    assert fixed["fixed"] == 128 * 1024
    kept_moving, kept_fixed = moving["kept_kib"], fixed["kept_kib"]
    assert kept_moving is not None and kept_fixed is not None
    assert kept_moving > 8 * 1024, f"glibc's moving threshold kept only {kept_moving} KiB"
    assert kept_fixed < 1024, f"with the fixed threshold {kept_fixed} KiB stayed resident"
