"""Benchmarks on real namespaces (root): inline middleboxes, wirebench, the delay stage, and
the wall time of a small matrix.

Every throughput figure is a ratio to a reference measured in the same run, round by round:
plain inline forwarding to the kernel bridge, each catalogue box to plain inline forwarding,
the python stack to the kernel stack. A round measures the reference and the subjects back to
back, so a load that comes and goes hits both; the figure is the median of the rounds' ratios.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.bench.record import Figure
from testbed.errors import EnvironmentProblem
from testbed.inline.bench_rewrite import STRIP_EVERY_PACKET
from testbed.inline.bench_rewrite import measure as measure_inline

# Each catalogue box with parameters under which a plain TCP flow survives it, acting on as
# many packets as it can (strip: every packet; rewrite_seq and nat: every packet; coalesce,
# split: every data segment is a candidate; drop and delay: a match that is evaluated on every
# packet and never fires, so the figure is the box's classification cost, not TCP's recovery).
CATALOGUE_BOXES: dict[str, dict[str, Any]] = {
    "strip_options": STRIP_EVERY_PACKET,
    "rewrite_seq": {"name": "rewrite_seq", "params": {"direction": "both"}},
    "nat": {"name": "nat", "params": {"public_address": "10.99.0.100"}},
    "coalesce": {"name": "coalesce", "params": {"hold_ms": 1.0}},
    "split": {"name": "split", "params": {"mss_bytes": 500, "options_on_pieces": "all"}},
    "rewrite_payload": {"name": "rewrite_payload", "params": {
        "pattern": "A", "replacement": "B", "limit": 1, "direction": "upstream"}},
    "syn_firewall": {"name": "syn_firewall", "params": {}},
    "drop": {"name": "drop", "params": {"match": ["mp_join_ack"]}},
    "delay": {"name": "delay", "params": {"match": ["mp_join_ack"], "delay_ms": 200.0}},
}
QUICK_BOXES = ("strip_options",)
MATRIX_SPEC = Path(__file__).resolve().parents[2] / "experiments" / "fallback_matrix_ci.toml"
MATRIX_ROWS = "none,strip_mp_capable_syn,syn_firewall_reset"


@dataclass(frozen=True)
class WirePlan:
    seconds: float
    rounds: int
    boxes: tuple[str, ...]
    wirebench: bool
    delay_stage: bool
    matrix: bool
    tolerances: dict[str, float] = field(default_factory=dict)
    memory_bytes: int = 0  # the python stack's RSS over an upload of this many bytes (0: skip)


def require_root() -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem("bench: the wire benchmarks build network namespaces and need "
                                 "root: run `sudo testbed bench`")


def _median_figure(ratios: list[float], unit: str, reference: str, tolerance: float,
                   detail: dict[str, Any], gated: bool) -> Figure:
    return Figure(value=statistics.median(ratios), unit=unit, reference=reference,
                  rounds=ratios, tolerance=tolerance, gated=gated,
                  detail={"aggregate": "median of rounds", **detail})


def inline_boxes(plan: WirePlan, progress: Callable[[str], None]) -> tuple[dict[str, Figure],
                                                                            float]:
    """Per round: the kernel bridge, plain inline forwarding, then each box. Returns the
    figures and the median plain-forwarding Mbit/s (the delay stage's load is derived from it)."""
    runs: dict[str, list[dict[str, Any]]] = {"bridge": [], "plain": []}
    for box in plan.boxes:
        runs[box] = []
    for round_index in range(plan.rounds):
        for mode in runs:
            progress(f"inline {mode}, round {round_index + 1}/{plan.rounds}")
            if mode in ("bridge", "plain"):
                runs[mode].append(measure_inline(mode, plan.seconds))
            else:
                runs[mode].append(measure_inline("strip", plan.seconds, [CATALOGUE_BOXES[mode]]))
    figures = {}
    plain_mbit = [run["mbit_s"] for run in runs["plain"]]
    figures["inline.plain.vs_bridge"] = _median_figure(
        [p["mbit_s"] / b["mbit_s"] for p, b in zip(runs["plain"], runs["bridge"], strict=True)],
        "Mbit/s ratio", "the kernel bridge in the same round (iperf3 A->C, MTU 1500)",
        plan.tolerances.get("inline.plain.vs_bridge", 0.5),
        {"plain_mbit_s": [round(v) for v in plain_mbit],
         "bridge_mbit_s": [round(run["mbit_s"]) for run in runs["bridge"]]},
        gated="inline.plain.vs_bridge" in plan.tolerances)
    for box in plan.boxes:
        box_runs = runs[box]
        name = f"inline.{box}.vs_plain"
        figures[name] = _median_figure(
            [r["mbit_s"] / p["mbit_s"] for r, p in zip(box_runs, runs["plain"], strict=True)],
            "Mbit/s ratio", "plain inline forwarding (no box) in the same round",
            plan.tolerances.get(name, 0.5),
            {"mbit_s": [round(r["mbit_s"]) for r in box_runs],
             "packets_changed_of_seen": [[r.get("box_changed"), r.get("box_seen")]
                                         for r in box_runs], "box": CATALOGUE_BOXES[box]},
            gated=name in plan.tolerances)
        cpu_name = f"inline.{box}.cpu_vs_plain"
        figures[cpu_name] = _median_figure(
            [p["bump_cpu_us_per_frame"] / r["bump_cpu_us_per_frame"]
             for r, p in zip(box_runs, runs["plain"], strict=True)],
            "CPU time per frame ratio (plain / box)",
            "plain inline forwarding's CPU time per frame in the same round",
            plan.tolerances.get(cpu_name, 0.5),
            {"us_per_frame": [round(r["bump_cpu_us_per_frame"], 2) for r in box_runs]},
            gated=cpu_name in plan.tolerances)
    return figures, statistics.median(plain_mbit)


def wirebench(plan: WirePlan) -> Figure:
    from testbed.bench_stack import run_bench

    cpus = sorted(os.sched_getaffinity(0))
    pin = (cpus[0], cpus[1]) if len(cpus) >= 2 else None
    result = run_bench(plan.seconds, "upload", False, plan.rounds, pin)
    ratios = [ratio for ratio in result["ratio_per_round"] if ratio is not None]
    kernel, python = result["kernel"], result["python"]
    return _median_figure(
        ratios, "goodput ratio python/kernel",
        "kernel MPTCP client -> kernel server on two_path in the same round",
        plan.tolerances.get("wirebench.python_vs_kernel", 0.5),
        {"kernel_mbit_s": kernel["all_goodputs_mbps"], "python_mbit_s": python["all_goodputs_mbps"],
         "pinned_cpus": result["pinned_cpus"], "seconds": plan.seconds},
        gated="wirebench.python_vs_kernel" in plan.tolerances)


def stack_memory(plan: WirePlan) -> Figure:
    """The python client's peak RSS over an upload (`testbed stack membench`): an absolute
    figure in MB, gated by ratio to the baseline and passing anyway under the 48 MB goal."""
    from testbed.bench_memory import GOAL_PEAK_MB, run_membench

    result = run_membench(plan.memory_bytes, 1000.0, "upload")
    rss = result["rss"]
    assert isinstance(rss, dict)
    if result["intact"] is not True:
        raise EnvironmentProblem("bench: the memory benchmark's upload did not arrive intact; "
                                 f"run `testbed stack membench --bytes {plan.memory_bytes}` "
                                 "to see it")
    return Figure(
        value=float(rss["peak_mb"]), unit="MB", better="lower", limit=GOAL_PEAK_MB,
        tolerance=plan.tolerances.get("stack.rss_peak_mb", 0.8),
        gated="stack.rss_peak_mb" in plan.tolerances,
        reference="absolute: peak RSS (VmHWM) of the python client process during the upload",
        rounds=[float(rss["peak_mb"])],
        detail={"aggregate": "one upload", "bytes": plan.memory_bytes,
                "rate_mbit_per_path": 1000, "goodput_mbps": result["goodput_mbps"],
                **{key: rss[key] for key in ("median_mb", "early_max_mb", "late_max_mb", "growth", "reads")}})


def delay_stage(plain_mbit: float, tolerance: float) -> dict[str, Figure]:
    """The userspace delay stage's added delay, idle (gated under a 1 ms limit) and under UDP
    at 80 % of plain inline forwarding's rate (recorded: too load-dependent to gate here)."""
    from testbed.fidelity import delay_stage_accuracy

    result = delay_stage_accuracy(delay_ms=5.0, load_mbit=round(0.8 * plain_mbit), pings=100)
    figures = {}
    for phase, gated in (("idle", True), ("loaded", False)):
        summary = result.get(phase, {})
        if "added_ms" not in summary:
            raise EnvironmentProblem(f"bench: no ping answer through the delay stage ({phase})")
        figures[f"delay_stage.added_ms.{phase}"] = Figure(
            value=max(summary["added_ms"], 0.0), unit="ms", better="lower", gated=gated,
            limit=1.0, tolerance=tolerance,
            reference="absolute: median ping RTT minus the configured 2 x 5 ms",
            rounds=[summary["added_ms"]],
            detail={"aggregate": "median of 100 pings", **summary,
                    "load_mbit": result["load_mbit"], "queue_drops": result["queue_drops"]})
    return figures


def matrix_wall_time(tolerance: float) -> Figure:
    """A small matrix (CI spec, three rows, kernel-kernel), timed end to end per cell: set-up,
    traffic, timeouts, capture reading and teardown; bound by timers more than CPU speed."""
    import io

    from testbed.matrix import MatrixInterrupted, load_matrix_spec, run_matrix, select

    matrix = select(load_matrix_spec(MATRIX_SPEC), MATRIX_ROWS, None)
    with tempfile.TemporaryDirectory(prefix="tb-bench-matrix-") as scratch:
        started = time.monotonic()
        try:
            doc = run_matrix(matrix, Path(scratch), stream=io.StringIO(), tty=False)
        except MatrixInterrupted:  # the cells tore down; the CLI reports Ctrl-C in one line
            raise KeyboardInterrupt from None
        wall = time.monotonic() - started
    cells = len(matrix.cells)
    summary = doc["summary"]
    if summary["as_expected"] != cells:
        raise EnvironmentProblem(f"bench: the timed matrix had {summary['differ']} cell(s) "
                                 f"differing and {summary['errors']} error(s); run `testbed matrix "
                                 f"{MATRIX_SPEC} --rows {MATRIX_ROWS} --out DIR` to see why")
    return Figure(value=wall / cells, unit="s per cell", better="lower", tolerance=tolerance,
                  reference="absolute: wall time per cell (timer-bound, not a CPU figure)",
                  rounds=[wall / cells],
                  detail={"aggregate": "one matrix run", "spec": MATRIX_SPEC.name,
                          "rows": MATRIX_ROWS, "cells": cells, "wall_s": round(wall, 1)})
