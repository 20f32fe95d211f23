"""CPU benchmarks run in this process: the stack core and the raw-bytes fast paths.

Each figure is a rate divided by the calibration loop's rate measured in the same run
(testbed.bench.calibration), so it reads "packets per calibration loop" and the machine's
speed cancels out. Rounds are timed separately and the best counts: other work on the machine
only ever slows a round down.
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from testbed.bench.record import Figure
from testbed.errors import EnvironmentProblem
from testbed.sim.bench import run_benchmark

MICROBENCH = Path(__file__).resolve().parents[2] / "scripts" / "fastpath_microbench.py"
UNIT = "packets per calibration loop"
REFERENCE = "calibration loop (testbed.bench.calibration) in the same process"


@dataclass(frozen=True)
class CpuPlan:
    """How much work each CPU benchmark does (quick for the suite, full for a baseline)."""

    stack_bytes: int
    stack_rounds: int
    microbench_repeat: int
    microbench_packets: int


QUICK = CpuPlan(stack_bytes=2_000_000, stack_rounds=5, microbench_repeat=7,
                microbench_packets=5_000)
FULL = CpuPlan(stack_bytes=20_000_000, stack_rounds=5, microbench_repeat=7,
               microbench_packets=20_000)


def stack_core(plan: CpuPlan, loops_per_second: float, tolerance: float) -> Figure:
    """Data segments the stack core (sender and receiver, application time excluded) handles
    per second of its own time, over the calibration rate."""
    rates, details = [], []
    for round_index in range(plan.stack_rounds):
        result = run_benchmark(plan.stack_bytes, seed=1 + round_index, clock=time.process_time)
        if not result.hash_ok:
            raise EnvironmentProblem("bench: the stack core transfer arrived damaged; the stack "
                                     "is broken, run `testbed stack bench` to see it")
        segments = result.sender_data_segments + result.receiver_data_segments
        seconds = (result.sender_seconds - result.sender_app_seconds
                   + result.receiver_seconds - result.receiver_app_seconds)
        rates.append(segments / seconds)
        details.append(round(segments / seconds))
    ratios = [rate / loops_per_second for rate in rates]
    return Figure(value=max(ratios), unit="data segments per calibration loop",
                  reference=REFERENCE, rounds=ratios, tolerance=tolerance,
                  detail={"aggregate": "best round", "segments_per_second": details,
                          "bytes": plan.stack_bytes, "sides": "sender + receiver"})


def _microbench_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fastpath_microbench", MICROBENCH)
    if spec is None or spec.loader is None or not MICROBENCH.exists():
        raise EnvironmentProblem(f"bench: {MICROBENCH} is missing; run the benchmark from a "
                                 f"checkout of the project")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fast_paths(plan: CpuPlan, loops_per_second: float,
               tolerances: dict[str, float]) -> dict[str, Figure]:
    """scripts/fastpath_microbench.py's cases: packets per second of each, over the
    calibration rate (`tolerances` names the gated cases; the others are recorded only)."""
    timings = _microbench_module().measure(plan.microbench_repeat, plan.microbench_packets,
                                          time.process_time)
    figures = {}
    for name, nanoseconds in timings.items():
        ratios = [1e9 / ns / loops_per_second for ns in nanoseconds]
        figures[f"fastpath.{name}"] = Figure(
            value=max(ratios), unit=UNIT, reference=REFERENCE, rounds=ratios,
            gated=name in tolerances, tolerance=tolerances.get(name, 0.5),
            detail={"aggregate": "best round", "ns_per_packet_best": round(min(nanoseconds)),
                    "ns_per_packet_median": round(statistics.median(nanoseconds))})
    return figures


def spread(values: list[float]) -> dict[str, Any]:
    """Min/max relative to the median: how much the rounds of one figure disagree."""
    middle = statistics.median(values)
    return {"min_over_median": round(min(values) / middle, 3),
            "max_over_median": round(max(values) / middle, 3)}
