"""`testbed bench [--quick] [--out FILE] [--compare BASELINE]`: every benchmark, one JSON, a gate.

Without --quick: the stack core, every fast path, the analysis of a capture, plain inline
forwarding and every catalogue box against the kernel bridge, wirebench (python/kernel), the
delay stage and a small matrix's wall time, and the python stack's peak RSS over a 2 GB upload
(about 6 minutes). With --quick (the suite's gate, about a minute): the stack core, the fast
paths, the analysis, the strip box against plain forwarding against the bridge, and the stack's
peak RSS over a 600 MB upload.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from testbed.bench import calibration, cpu, gate, record, wire
from testbed.bench.baseline import merge as baseline_merge
from testbed.errors import SpecError

# Gated figures and the highest tolerance each may get (the others are recorded only); a
# baseline made with --runs N lowers a tolerance to what the spread of its runs needs
# (testbed.bench.baseline), and leaves a figure ungated that noise alone could halve. Every
# tolerance stays above 0.5, so a fast path that takes twice the time fails. No Mbit/s ratio of
# the inline boxes is gated (they are recorded): on the loaded 2-core development machine
# strip/plain ranged 0.77..2.55 x its median over six quick runs, while the bump's CPU time per
# frame stayed within 0.94..1.06.
QUICK_TOLERANCES: dict[str, float] = {
    "stack.core": 0.7, "fastpath.strip.data": 0.7, "fastpath.pipeline.strip": 0.7,
    "fastpath.pipeline.decode": 0.7, "fastpath.coalesce.acks": 0.7,
    "fastpath.receive.filter": 0.7, "fastpath.send_packet": 0.7,
    "inline.strip_options.cpu_vs_plain": 0.7, "stack.rss_peak_mb": 0.8, "analysis.packets": 0.7,
}
FULL_TOLERANCES: dict[str, float] = {
    **QUICK_TOLERANCES, "stack.core": 0.8, "wirebench.python_vs_kernel": 0.85,
    **{f"inline.{box}.cpu_vs_plain": 0.7 for box in wire.CATALOGUE_BOXES},
    "delay_stage.added_ms.idle": 0.5, "matrix.wall_per_cell": 0.67,
}
QUICK_WIRE = wire.WirePlan(seconds=2.0, rounds=3, boxes=wire.QUICK_BOXES, wirebench=False,
                           delay_stage=False, matrix=False, tolerances=QUICK_TOLERANCES,
                           memory_bytes=600_000_000)
FULL_WIRE = wire.WirePlan(seconds=5.0, rounds=3, boxes=tuple(wire.CATALOGUE_BOXES),
                          wirebench=True, delay_stage=True, matrix=True,
                          tolerances=FULL_TOLERANCES, memory_bytes=2_000_000_000)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="the suite's short gate: stack core, fast paths, strip box vs plain "
                             "forwarding vs the kernel bridge (under a minute)")
    parser.add_argument("--out", metavar="FILE", help="write the benchmark JSON here")
    parser.add_argument("--runs", type=int, default=1, metavar="N",
                        help="run every benchmark N times and record each figure's median, "
                             "with tolerances from the runs' spread (how a baseline is made)")
    parser.add_argument("--compare", metavar="BASELINE",
                        help="compare with a baseline file of the same mode (e.g. "
                             "experiments/baselines/bench_quick.json); exit 1 if a gated figure "
                             "falls below its tolerance")


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def measure(quick: bool) -> dict[str, Any]:
    """Run the benchmarks of a mode and return the benchmark document."""
    wire.require_root()
    machine = record.machine()
    tolerances = QUICK_TOLERANCES if quick else FULL_TOLERANCES
    plan, wire_plan = (cpu.QUICK, QUICK_WIRE) if quick else (cpu.FULL, FULL_WIRE)
    _progress("calibration loop")
    best_before, rates = calibration.loops_per_second()
    _progress("stack core")
    figures = {"stack.core": cpu.stack_core(plan, tolerances["stack.core"])}
    _progress("fast paths")
    figures.update(cpu.fast_paths(plan, {name.removeprefix("fastpath."): value
                                         for name, value in tolerances.items()
                                         if name.startswith("fastpath.")}))
    _progress("analysis (testbed analyze on a synthetic capture)")
    figures["analysis.packets"] = cpu.analysis(plan, tolerances["analysis.packets"])
    best_after, rates_after = calibration.loops_per_second()
    loops = max(best_before, best_after)  # the machine's speed, recorded (each round has its own)
    inline, plain_mbit = wire.inline_boxes(wire_plan, _progress)
    figures.update(inline)
    if wire_plan.wirebench:
        _progress("wirebench (kernel and python on two_path)")
        figures["wirebench.python_vs_kernel"] = wire.wirebench(wire_plan)
    if wire_plan.memory_bytes:
        _progress("python stack memory (an upload on two_path)")
        figures["stack.rss_peak_mb"] = wire.stack_memory(wire_plan)
    if wire_plan.delay_stage:
        _progress("delay stage")
        figures.update(wire.delay_stage(plain_mbit, tolerances["delay_stage.added_ms.idle"]))
    if wire_plan.matrix:
        _progress("matrix wall time")
        figures["matrix.wall_per_cell"] = wire.matrix_wall_time(tolerances["matrix.wall_per_cell"])
    calibration_info = {"id": calibration.CALIBRATION_ID, "loops_per_second": round(loops),
                        "rounds": [round(rate) for rate in rates + rates_after]}
    return record.document(figures, calibration_info, quick=quick, machine_info=machine)


def format_figures(doc: dict[str, Any]) -> str:
    figures = doc["figures"]
    width = max(len(name) for name in figures)
    lines = [f"calibration: {doc['calibration']['loops_per_second']} loops/s; machine "
             f"{doc['machine']['cpu_model']}, {doc['machine']['cores']} cores, load average "
             f"{doc['machine']['load_average_before']} -> {doc['machine']['load_average_after']}"]
    for name, figure in figures.items():
        rounds = ", ".join(f"{value:.4g}" for value in figure["rounds"])
        lines.append(f"{name:<{width}} {figure['value']:>10.4g}  {figure['unit']}"
                     f"{'' if figure['gated'] else ' (not gated)'}  [{rounds}]")
    return "\n".join(lines)


def better_of(first: dict[str, Any], second: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """`first` with each of `names` replaced by the better of its two measurements (a slower
    fast path is slow in both; `detail.confirmation` keeps both values)."""
    figures = dict(first["figures"])
    for name in names:
        one, other = first["figures"][name], second["figures"].get(name)
        if other is None:
            continue
        higher = one.get("better", "higher") == "higher"
        best = max(one, other, key=lambda f: f["value"] if higher else -f["value"])
        figures[name] = {**best, "detail": {**best["detail"], "confirmation": {
            "values": [one["value"], other["value"]],
            "why": "below tolerance in the first run: measured again, the better one counts"}}}
    return {**first, "figures": figures}


def run(args: argparse.Namespace) -> int:
    baseline = record.load(args.compare) if args.compare else None
    if baseline is not None and bool(baseline.get("quick")) != bool(args.quick):
        mode = "quick" if baseline.get("quick") else "full"
        raise SpecError(f"--compare: {args.compare} is a {mode} baseline; run "
                        f"`testbed bench{' --quick' if baseline.get('quick') else ''}` to "
                        f"compare with it")
    if args.runs < 1:
        raise SpecError(f"--runs must be at least 1, got {args.runs}")
    docs = []
    for index in range(args.runs):
        if args.runs > 1:
            _progress(f"run {index + 1} of {args.runs}")
        docs.append(measure(args.quick))
    tolerances = QUICK_TOLERANCES if args.quick else FULL_TOLERANCES
    doc = docs[0] if args.runs == 1 else baseline_merge(docs, tolerances)
    rows = gate.compare(baseline, doc) if baseline is not None else []
    below = [row.name for row in gate.failed(rows) if row.verdict == "FAIL"]
    if below and args.runs == 1:
        assert baseline is not None
        print(gate.format_table(rows))
        _progress(f"{', '.join(below)} below tolerance: measuring once more, since a busy "
                  f"moment of a shared machine is not slower code")
        doc = better_of(doc, measure(args.quick), below)
        rows = gate.compare(baseline, doc)
    if args.out:
        record.write(Path(args.out), doc)
    print(format_figures(doc))
    if baseline is None:
        return 0
    if baseline["machine"].get("cpu_model") != doc["machine"]["cpu_model"]:
        print(f"note: the baseline was measured on {baseline['machine'].get('cpu_model')}; "
              f"ratios cancel most of a machine's speed, not all of it")
    print(gate.format_table(rows))
    bad = gate.failed(rows)
    print(f"bench gate: {'FAIL' if bad else 'PASS'} ({len(bad)} of "
          f"{sum(row.gated for row in rows)} gated figures below tolerance or missing)")
    return 1 if bad else 0
