"""`testbed latency`: request/response latency per scheduler, and what the redundant one costs.

One network (experiments/scenarios/latency.toml, `--short`: latency_short.toml): two paths
with different delays that swap on a timeline, 1 % loss on each, and request/response
traffic timed per request (testbed.endpoints.request_response). It runs with the kernel's
default scheduler at both ends (the spec as written), then with the bundled python stack at
both ends under each of its schedulers, `--runs` times each. Every run keeps its result.json
and latency.csv in DIR/<variant>/run-<i>/; this command adds latency.md (per variant the
medians over the runs of p50/p90/p99/max and of the wire bytes per payload byte, then the
PASS/FAIL checks), latency.json (the same figures) and latency.png (the latency CDF of every
variant, and each variant's per-request latency over time with the delay swaps marked).
`--replot` re-derives all three from the run files. Exit 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from testbed.errors import SpecError, TestbedError
from testbed.latency_result import LATENCY_FILE, read_latency_csv
from testbed.report.files import save_figure
from testbed.result import RESULT_FILE, read_result
from testbed.spec import ExperimentSpec, load_spec

SCENARIOS = Path(__file__).resolve().parents[1] / "experiments" / "scenarios"
SPECS = {False: "latency.toml", True: "latency_short.toml"}
# variant name -> the python stack's scheduler at both ends (None: the spec's kernel endpoints)
VARIANTS: dict[str, str | None] = {
    "kernel": None,
    "python-lowest_rtt": "lowest_rtt",
    "python-round_robin": "round_robin",
    "python-redundant": "redundant",
}
FIGURES = ("p50_ms", "p90_ms", "p99_ms", "max_ms", "wire_per_payload_byte")
PLOT_FILE, TABLE_FILE, SUMMARY_FILE = "latency.png", "latency.md", "latency.json"
# the redundant scheduler sends every byte on each subflow with room: at least this much
# more than one copy, where the others stay near one copy (retransmissions only)
REDUNDANT_MIN_COST, SINGLE_MAX_COST = 1.5, 1.3
TAIL_MIN_REQUESTS = 500  # per run, for the tail check to compare p99 (see tail_figure)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path,
                        help="directory for <variant>/run-<i>/, latency.md, latency.json, latency.png")
    parser.add_argument("--short", action="store_true",
                        help="the 4 s variant of the test suite (latency_short.toml), one run each")
    parser.add_argument("--runs", type=int, default=None,
                        help="runs per variant, medians reported (default 3; 1 with --short)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated subset of {', '.join(VARIANTS)}")
    parser.add_argument("--replot", action="store_true",
                        help="do not run: re-derive the table, JSON and PNG from the files in --out")


def variants_of(text: str) -> list[str]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in VARIANTS]
    if unknown or not chosen:
        raise SpecError(f"--variants: {', '.join(unknown) or 'none given'} not among "
                        f"{', '.join(VARIANTS)}")
    return chosen


def variant_spec(base: ExperimentSpec, variant: str, run_index: int) -> ExperimentSpec:
    """The base spec with the variant's endpoints, seeded per run."""
    scheduler = VARIANTS[variant]
    spec = replace(base, name=f"{base.name}-{variant}", seed=base.seed + run_index)
    if scheduler is None:
        return spec
    endpoints = tuple(replace(e, stack="python", stack_config={**e.stack_config, "scheduler": scheduler},
                              kernel=None) for e in base.endpoints)
    return replace(spec, endpoints=endpoints)


def run_dirs(out: Path, variant: str) -> list[Path]:
    return sorted((out / variant).glob("run-*"), key=lambda p: int(p.name.partition("-")[2] or 0))


def read_runs(out: Path, variant: str) -> list[dict[str, Any]]:
    """Each run of a variant: its result.json and its per-request (sent_s, latency_ms)."""
    runs = []
    for run_dir in run_dirs(out, variant):
        if not (run_dir / RESULT_FILE).exists():
            continue
        result = read_result(run_dir)
        runs.append({"dir": str(run_dir), "result": result,
                     "requests": read_latency_csv(run_dir / LATENCY_FILE)})
    if not runs:
        raise SpecError(f"{out / variant}: no run with a {RESULT_FILE}; run without --replot first")
    return runs


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the runs of each figure, with every run's own figures."""
    per_run = []
    for run in runs:
        conn = run["result"]["connections"][0]
        latency = conn.get("latency") or {}
        per_run.append({**{f: latency.get(f) for f in FIGURES}, "count": latency.get("count", 0),
                        "requests": latency.get("requests"), "integrity": conn["integrity"],
                        "outcome": conn["outcome"], "dir": run["dir"]})
    return summarise_rows(per_run)


def summarise_rows(per_run: list[dict[str, Any]]) -> dict[str, Any]:
    """The medians of runs' figures (one dict per run, FIGURES keys)."""
    medians = {}
    for figure in FIGURES:
        values = [r[figure] for r in per_run if r[figure] is not None]
        medians[figure] = round(statistics.median(values), 3) if values else None
    return {"runs": len(per_run), "median": medians, "per_run": per_run}


def checks_of(summary: dict[str, dict[str, Any]]) -> list[tuple[str, str, bool]]:
    """(what, measured, passed) rows of the PASS/FAIL table."""
    table = []
    for variant, s in summary.items():
        runs = s["per_run"]
        answered = [f"{r['count']}/{r['requests']}" for r in runs]
        table.append((f"{variant}: every request answered", ", ".join(answered),
                      all(r["count"] == r["requests"] for r in runs)))
        table.append((f"{variant}: integrity ok (requests and responses)",
                      ", ".join(r["integrity"] for r in runs), all(r["integrity"] == "ok" for r in runs)))
        cost = s["median"]["wire_per_payload_byte"]
        if VARIANTS[variant] == "redundant":
            table.append((f"{variant}: wire bytes per payload byte >= {REDUNDANT_MIN_COST}",
                          _fmt(cost), cost is not None and cost >= REDUNDANT_MIN_COST))
        else:
            table.append((f"{variant}: wire bytes per payload byte <= {SINGLE_MAX_COST}",
                          _fmt(cost), cost is not None and cost <= SINGLE_MAX_COST))
    if "python-redundant" in summary:
        tail = tail_figure(summary)
        redundant = summary["python-redundant"]["median"][tail]
        for variant, s in summary.items():
            if variant == "python-redundant":
                continue
            other = s["median"][tail]
            table.append((f"python-redundant {tail[:3]} below {variant}'s",
                          f"{_fmt(redundant)} vs {_fmt(other)} ms",
                          redundant is not None and other is not None and redundant < other))
    return table


def tail_figure(summary: dict[str, dict[str, Any]]) -> str:
    """The percentile the tail check compares: p99 where every run has at least
    TAIL_MIN_REQUESTS requests (its p99 then rests on several of them), else p90 (the short
    variant's 100 requests: their p99 is one request, at the mercy of one loss or stall)."""
    fewest = min((r["requests"] or 0 for s in summary.values() for r in s["per_run"]), default=0)
    return "p99_ms" if fewest >= TAIL_MIN_REQUESTS else "p90_ms"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def format_table(summary: dict[str, dict[str, Any]], checks: list[tuple[str, str, bool]],
                 load: str) -> str:
    lines = [f"Latency per request (ms), medians of the runs; load average at start: {load}", "",
             "| variant | runs | p50 | p90 | p99 | max | wire bytes / payload byte |",
             "|---|---|---|---|---|---|---|"]
    for variant, s in summary.items():
        m = s["median"]
        lines.append(f"| {variant} | {s['runs']} | {_fmt(m['p50_ms'])} | {_fmt(m['p90_ms'])} | "
                     f"{_fmt(m['p99_ms'])} | {_fmt(m['max_ms'])} | {_fmt(m['wire_per_payload_byte'])} |")
    lines += ["", "| check | measured | verdict |", "|---|---|---|"]
    lines += [f"| {what} | {measured} | {'PASS' if ok else 'FAIL'} |" for what, measured, ok in checks]
    return "\n".join(lines) + "\n"


def swap_times(result: dict[str, Any]) -> list[float]:
    return sorted({float(e["at_s"]) for e in result["spec"]["timeline"] if e.get("link")})


def write_plot(png: Path, runs: dict[str, list[dict[str, Any]]], summary: dict[str, dict[str, Any]],
               checks: list[tuple[str, str, bool]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    figure, (cdf, series) = pyplot.subplots(1, 2, figsize=(13, 5), dpi=110)
    try:
        for variant, variant_runs in runs.items():
            pooled = sorted(latency for run in variant_runs for _sent, latency in run["requests"])
            if pooled:
                fractions = [(i + 1) / len(pooled) for i in range(len(pooled))]
                m = summary[variant]["median"]
                label = f"{variant} (p99 {_fmt(m['p99_ms'])} ms, x{_fmt(m['wire_per_payload_byte'])} bytes)"
                cdf.step(pooled, fractions, where="post", label=label)
            first = variant_runs[0]["requests"]
            series.plot([s for s, _l in first], [lat for _s, lat in first], marker=".", markersize=3,
                        linewidth=0.6, label=variant)
        for at in swap_times(next(iter(runs.values()))[0]["result"]):
            series.axvline(at, color="grey", linestyle=":", linewidth=1)
        verdict = "PASS" if all(ok for _w, _m, ok in checks) else "FAIL"
        cdf.set_title(f"request latency CDF, all runs pooled: {verdict}")
        cdf.set_xscale("log")
        cdf.set_xlabel("latency (ms, log)")
        cdf.set_ylabel("fraction of requests")
        cdf.legend(fontsize=7, loc="lower right")
        cdf.grid(alpha=0.3, which="both")
        series.set_title("per request, first run (dotted: path delays swap)")
        series.set_yscale("log")
        series.set_xlabel("request sent at (s after the first)")
        series.set_ylabel("latency (ms, log)")
        series.legend(fontsize=7)
        series.grid(alpha=0.3, which="both")
        for axis in (cdf.xaxis, series.yaxis):  # plain milliseconds on the log axes: 10, 20, 50...
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(ScalarFormatter())
            axis.set_minor_formatter(NullFormatter())
        figure.tight_layout()
        save_figure(figure, png)
    finally:
        pyplot.close(figure)


def run(args: argparse.Namespace) -> int:
    variants = variants_of(args.variants)
    count = args.runs if args.runs is not None else (1 if args.short else 3)
    if not 1 <= count <= 50:
        raise SpecError(f"--runs must be 1..50, got {count}")
    load = "/".join(f"{v:.2f}" for v in os.getloadavg())
    if not args.replot:
        from testbed.runner import run_experiment

        base = load_spec(SCENARIOS / SPECS[args.short])
        for index in range(count):  # variants interleaved, so load drifts hit each alike
            for variant in variants:
                spec = variant_spec(base, variant, index)
                print(f"[latency] {variant} run {index + 1}/{count}", flush=True)
                run_experiment(spec, args.out / variant / f"run-{index}", progress=_quiet_progress)
    runs = {variant: read_runs(args.out, variant) for variant in variants}
    summary = {variant: summarise(variant_runs) for variant, variant_runs in runs.items()}
    checks = checks_of(summary)
    table = format_table(summary, checks, load)
    doc = {"load_average_at_start": load, "variants": summary,
           "checks": [{"check": w, "measured": m, "passed": ok} for w, m, ok in checks]}
    try:
        (args.out / TABLE_FILE).write_text(table)
        (args.out / SUMMARY_FILE).write_text(json.dumps(doc, indent=2) + "\n")
    except OSError as exc:
        raise TestbedError(f"could not write into {args.out}: {exc.strerror}") from exc
    write_plot(args.out / PLOT_FILE, runs, summary, checks)
    print(table, end="")
    print(f"[latency] {args.out / PLOT_FILE}, {args.out / TABLE_FILE}, {args.out / SUMMARY_FILE}")
    return 0 if all(ok for _w, _m, ok in checks) else 1


def _quiet_progress(message: str) -> None:
    """The runner's messages on stderr, without the transfer's progress bar lines."""
    if "%" in message and "ETA" in message:
        return
    print(f"[latency] {message}", file=sys.stderr, flush=True)
