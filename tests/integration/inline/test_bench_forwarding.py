"""The forwarding-ceiling benchmark command runs end to end and forwards without errors.

Its speed figures are printed for people to read; they are not asserted (timings on a shared
machine are not a test), beyond the forwarding being clearly alive.
"""

from __future__ import annotations

import pytest

from testbed.inline.bench_forwarding import format_results, run_bench

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_bench_plain_and_reencode_against_the_bridge() -> None:
    results = run_bench(["bridge", "plain", "reencode"], seconds=2.0)
    print("\n" + format_results(results))
    by_mode = {r["mode"]: r for r in results}
    assert by_mode["bridge"]["ratio_to_bridge"] == 1.0
    for mode in ("plain", "reencode"):
        assert by_mode[mode]["mbit_s"] > 100, by_mode[mode]
        assert by_mode[mode]["send_errors"] == 0
        assert by_mode[mode]["queue_drops"] == 0
