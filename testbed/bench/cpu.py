"""CPU benchmarks run in this process: the stack core and the raw-bytes fast paths.

Each round's rate is divided by the calibration loop's rate (testbed.bench.calibration) timed
right after that round, so it reads "packets per calibration loop" and the machine's speed
cancels out, also when it changes during the run: on a shared 2-core VM a fast path's rounds
fell from 3.8 to 2.4 within a second while loops at the run's start and end ran at full speed,
and a gate against those ended below its tolerance with the code unchanged. Rounds are timed
separately and the best ratio counts: other work on the machine mostly slows a round down.
"""

from __future__ import annotations

import importlib.util
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from testbed.bench import calibration
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
    analysis_packets: int = 100_000
    analysis_rounds: int = 3


QUICK = CpuPlan(stack_bytes=2_000_000, stack_rounds=5, microbench_repeat=7,
                microbench_packets=5_000, analysis_packets=100_000, analysis_rounds=3)
FULL = CpuPlan(stack_bytes=20_000_000, stack_rounds=5, microbench_repeat=7,
               microbench_packets=20_000, analysis_packets=500_000, analysis_rounds=3)


CALIBRATION_BESIDE_LOOPS = 2000  # timed after every round: about 15 ms


def calibration_now() -> float:
    """The calibration loop's rate right now, the reference of the round just timed."""
    return calibration.loops_per_second(repeat=1, number=CALIBRATION_BESIDE_LOOPS)[0]


def stack_core(plan: CpuPlan, tolerance: float,
               calibrate: Callable[[], float] = calibration_now) -> Figure:
    """Data segments the stack core (sender and receiver, application time excluded) handles
    per second of its own time, over the calibration rate beside each round."""
    ratios, details = [], []
    for round_index in range(plan.stack_rounds):
        result = run_benchmark(plan.stack_bytes, seed=1 + round_index, clock=time.process_time)
        if not result.hash_ok:
            raise EnvironmentProblem("bench: the stack core transfer arrived damaged; the stack "
                                     "is broken, run `testbed stack bench` to see it")
        segments = result.sender_data_segments + result.receiver_data_segments
        seconds = (result.sender_seconds - result.sender_app_seconds
                   + result.receiver_seconds - result.receiver_app_seconds)
        ratios.append(segments / seconds / calibrate())
        details.append(round(segments / seconds))
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


def fast_paths(plan: CpuPlan, tolerances: dict[str, float],
               calibrate: Callable[[], float] = calibration_now) -> dict[str, Figure]:
    """scripts/fastpath_microbench.py's cases: packets per second of each round, over the
    calibration rate beside it (`tolerances` names the gated cases; the others are recorded
    only), each round timed by the script's `time_once` in the process's CPU time."""
    microbench = _microbench_module()
    figures = {}
    for name, (call, per_call) in microbench.cases().items():
        nanoseconds, ratios = [], []
        for _ in range(plan.microbench_repeat):
            nanoseconds.append(microbench.time_once(call, per_call, plan.microbench_packets,
                                                    time.process_time))
            ratios.append(1e9 / nanoseconds[-1] / calibrate())
        figures[f"fastpath.{name}"] = Figure(
            value=max(ratios), unit=UNIT, reference=REFERENCE, rounds=ratios,
            gated=name in tolerances, tolerance=tolerances.get(name, 0.5),
            detail={"aggregate": "best round", "ns_per_packet_best": round(min(nanoseconds)),
                    "ns_per_packet_median": round(statistics.median(nanoseconds))})
    return figures


def analysis(plan: CpuPlan, tolerance: float,
             calibrate: Callable[[], float] = calibration_now) -> Figure:
    """Packets `testbed analyze` reads per second of CPU time (the pass over the capture, no
    output files) on testbed.analyze.synthetic's header-only capture, over the calibration rate
    beside each round; a round that finds other than the capture's data bytes is an error."""
    # imported here: the analyser is not needed by the other CPU benchmarks
    from testbed.analyze.bench import measure
    from testbed.analyze.synthetic import expected_totals, write_synthetic_capture

    ratios, rates = [], []
    with tempfile.TemporaryDirectory(prefix="testbed-bench-analysis-") as work:
        path = Path(work) / "synthetic.pcap"
        write_synthetic_capture(path, packets=plan.analysis_packets)
        expected = expected_totals(plan.analysis_packets)["total_bytes"]
        for _ in range(plan.analysis_rounds):
            packets, _wall, seconds, found = measure(path)
            if found != expected:
                raise EnvironmentProblem(
                    f"bench: the analysis found {found} data bytes in a capture of {expected}; "
                    f"run `python -m testbed.analyze.bench` to see it")
            ratios.append(packets / seconds / calibrate())
            rates.append(round(packets / seconds))
    return Figure(value=max(ratios), unit=UNIT, reference=REFERENCE, rounds=ratios,
                  tolerance=tolerance,
                  detail={"aggregate": "best round", "packets_per_second": rates,
                          "packets": packets, "capture": "testbed.analyze.synthetic, headers only"})


def spread(values: list[float]) -> dict[str, Any]:
    """Min/max relative to the median: how much the rounds of one figure disagree."""
    middle = statistics.median(values)
    return {"min_over_median": round(min(values) / middle, 3),
            "max_over_median": round(max(values) / middle, 3)}
