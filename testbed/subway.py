"""`testbed subway`: the subway ride of the netdev 0.1 talk, for the kernel and the python stack.

A phone downloads over cellular (traces/subway_cellular.csv, 2..20 Mbit/s) all along and
over wifi (traces/subway_wifi.csv) only in the 20 s station windows every 90 s. Each stack's
run (experiments/scenarios/subway*.toml, `--short`: the compressed suite variant) keeps its
result.json and timeseries.csv in DIR/<stack>/; this command adds subway.png (per subflow
goodput against the traces' rates, station windows shaded, one panel per stack) and
subway.md (the PASS/FAIL table: wifi's share of the bytes per window, integrity, outcome,
one connection). Everything is re-derived from the result files (`--replot`). Exit 1 when
a check fails.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

from testbed.errors import SpecError, TestbedError
from testbed.report.files import save_figure
from testbed.result import RESULT_FILE, read_result
from testbed.results import BIN_S, TIMESERIES_FILE
from testbed.spec import load_spec

SCENARIOS = Path(__file__).resolve().parents[1] / "experiments" / "scenarios"
SPECS = {("kernel", False): "subway.toml", ("python", False): "subway_python.toml",
         ("kernel", True): "subway_short.toml", ("python", True): "subway_short_python.toml"}
PLOT_FILE = "subway.png"
TABLE_FILE = "subway.md"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path,
                        help="directory for <stack>/result.json, subway.png and subway.md")
    parser.add_argument("--stack", choices=("kernel", "python", "both"), default="both",
                        help="MPTCP stack of both endpoints (default: both, one run each)")
    parser.add_argument("--short", action="store_true",
                        help="the compressed ride (3 s stations every 13.5 s, 30 s) of the test suite")
    parser.add_argument("--replot", action="store_true",
                        help="do not run: re-derive the table and the PNG from the files in --out")


def stacks_of(choice: str) -> tuple[str, ...]:
    return ("kernel", "python") if choice == "both" else (choice,)


def read_run(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A stack's result.json and time series; a missing one is a one-line error."""
    result = read_result(run_dir / RESULT_FILE)
    try:
        with (run_dir / TIMESERIES_FILE).open() as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise TestbedError(f"{run_dir / TIMESERIES_FILE}: missing; run without --replot first") from None
    return result, rows


def link_back_after(rows: list[dict[str, Any]], address: str, start_s: float, end_s: float) -> float | None:
    """Seconds from start_s to the first time-series bin with bytes on the subflow of `address`."""
    for row in sorted(rows, key=lambda r: float(r["t_s"])):
        t = float(row["t_s"])
        ends = {str(row["local"]).rsplit(":", 1)[0], str(row["remote"]).rsplit(":", 1)[0]}
        if start_s <= t < end_s and address in ends and int(row["bytes"]) > 0:
            return t - start_s
    return None


def checks_of(stack: str, result: dict[str, Any],
              rows: list[dict[str, Any]] | None = None) -> list[tuple[str, str, bool]]:
    """(what, measured, passed) rows of the PASS/FAIL table for one stack's run."""
    table = []
    connections = result["connections"]
    table.append(("one connection", str(len(connections)), len(connections) == 1))
    conn = connections[0]
    table.append(("outcome", conn["outcome"], conn["outcome"] == "mptcp"))
    table.append(("integrity", conn["integrity"], conn["integrity"] == "ok"))
    expect = result["spec"]["expect"].get("trace_share", {})
    link_address = next((address for address, name in client_addresses(result).items()
                         if name == expect.get("link")), None)
    for window in result["expectations"].get("trace_share", []):
        up = window["up"]
        limit = expect.get("inside_min", 0.5) if up else expect.get("outside_max", 0.05)
        passed = window["total_bytes"] > 0 and (window["share"] >= limit if up else window["share"] <= limit)
        what = (f"wifi {'up (station)' if up else 'down (between)'} "
                f"{window['start_s']:g}-{window['end_s']:g} s, share {'>=' if up else '<='} {limit:.0%}")
        measured = f"{window['share']:.0%} of {window['total_bytes'] / 1e6:.1f} MB"
        back = None if not up or rows is None or link_address is None else \
            link_back_after(rows, link_address, window["start_s"], window["end_s"])
        if back is not None:
            measured += f", first {expect.get('link')} bytes after {back:.1f} s"
        table.append((what, measured, passed))
    table.append(("spec expectations", "; ".join(result["expectations"]["failures"]) or "all met",
                  result["expectations"]["passed"]))
    return table


def format_table(tables: dict[str, list[tuple[str, str, bool]]]) -> str:
    lines = ["| stack | check | measured | verdict |", "|---|---|---|---|"]
    for stack, rows in tables.items():
        lines += [f"| {stack} | {what} | {measured} | {'PASS' if ok else 'FAIL'} |"
                  for what, measured, ok in rows]
    return "\n".join(lines) + "\n"


def trace_steps(timeline: list[dict[str, Any]], link: str, end_s: float) -> tuple[list[float], list[float]]:
    """The rate a link was told to follow, as a step line (0 while it is down)."""
    times, rates, rate, up = [0.0], [0.0], 0.0, True
    for event in timeline:
        if event.get("link") != link:
            continue
        rate = event.get("set", {}).get("rate_mbit", rate)
        up = up if event.get("up") is None else event["up"]
        times.append(float(event["at_s"]))
        rates.append(rate if up else 0.0)
    times.append(end_s)
    rates.append(rates[-1])
    return times, rates


def per_path_series(rows: list[dict[str, Any]], addresses: dict[str, str],
                    smooth_s: float = 1.0) -> dict[str, tuple[list[float], list[float]]]:
    """Goodput per path (Mbit/s over smooth_s) from the time series' per-subflow bytes."""
    group = max(1, round(smooth_s / BIN_S))
    bins: dict[str, dict[int, int]] = {name: {} for name in addresses.values()}
    last = 0
    for row in rows:
        ends = {str(row["local"]).rsplit(":", 1)[0], str(row["remote"]).rsplit(":", 1)[0]}
        path = next((name for address, name in addresses.items() if address in ends), None)
        if path is None:
            continue
        index = int(float(row["t_s"]) / BIN_S + 1e-6) // group
        last = max(last, index)
        bins[path][index] = bins[path].get(index, 0) + int(row["bytes"])
    return {path: ([(i + 0.5) * group * BIN_S for i in range(last + 1)],
                   [per.get(i, 0) * 8 / (group * BIN_S) / 1e6 for i in range(last + 1)])
            for path, per in bins.items()}


def client_addresses(result: dict[str, Any]) -> dict[str, str]:
    """The phone's address on each traced link -> the link's name."""
    traced = {trace["link"] for trace in result["spec"].get("traces", [])}
    return {link["a_address"].split("/")[0]: link["name"]
            for link in result["topology"]["links"] if link["name"] in traced}


def write_plot(png: Path, runs: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]],
               tables: dict[str, list[tuple[str, str, bool]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes_list = pyplot.subplots(len(runs), 1, figsize=(11, 4 * len(runs)), dpi=110,
                                        squeeze=False)
    colours = {"wifi": "tab:blue", "cellular": "tab:orange"}
    try:
        for axes, (stack, (result, rows)) in zip(axes_list[:, 0], runs.items(), strict=True):
            end_s = float(result["spec"]["traffic"]["seconds"] or result["connections"][0]["duration_s"])
            for path, (times, values) in per_path_series(rows, client_addresses(result)).items():
                colour = colours.get(path)
                axes.plot(times, values, label=f"{path} subflow", color=colour, linewidth=1.5)
                t, r = trace_steps(result["spec"]["timeline"], path, end_s)
                axes.step(t, r, where="post", color=colour, linestyle=":", linewidth=1.0,
                          label=f"{path} trace rate")
            for window in result["expectations"].get("trace_share", []):
                if window["up"]:
                    axes.axvspan(window["start_s"], window["end_s"], color="tab:green", alpha=0.08)
                axes.text((window["start_s"] + window["end_s"]) / 2, 0.98, f"wifi {window['share']:.0%}",
                          transform=axes.get_xaxis_transform(), ha="center", va="top", fontsize=8)
            verdict = "PASS" if all(ok for _w, _m, ok in tables[stack]) else "FAIL"
            axes.set_title(f"subway ride, {stack} stack: {verdict} (stations shaded)")
            axes.set_xlabel("time since the transfer started (s)")
            axes.set_ylabel("goodput (Mbit/s, 1 s mean)")
            axes.set_xlim(0, end_s)
            axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4, fontsize=8)
            axes.grid(alpha=0.3)
        figure.tight_layout()
        save_figure(figure, png)
    finally:
        pyplot.close(figure)


def run(args: argparse.Namespace) -> int:
    stacks = stacks_of(args.stack)
    if not args.replot:
        from testbed.runner import run_experiment

        for stack in stacks:
            spec = load_spec(SCENARIOS / SPECS[(stack, args.short)])
            print(f"[subway] {spec.name}: {stack} stack, {spec.traffic.seconds:g} s", flush=True)
            run_experiment(spec, args.out / stack, progress=_quiet_progress)
    runs = {}
    for stack in stacks:
        if not (args.out / stack / RESULT_FILE).exists():
            raise SpecError(f"{args.out / stack}: no {RESULT_FILE}; run without --replot first")
        runs[stack] = read_run(args.out / stack)
    tables = {stack: checks_of(stack, result, rows) for stack, (result, rows) in runs.items()}
    table = format_table(tables)
    try:
        (args.out / TABLE_FILE).write_text(table)
    except OSError as exc:
        raise TestbedError(f"could not write {args.out / TABLE_FILE}: {exc.strerror}") from exc
    write_plot(args.out / PLOT_FILE, runs, tables)
    print(table, end="")
    print(f"[subway] {args.out / PLOT_FILE}, {args.out / TABLE_FILE}")
    return 0 if all(ok for rows in tables.values() for _w, _m, ok in rows) else 1


def _quiet_progress(message: str) -> None:
    """The runner's messages without the trace's many link changes."""
    if " link " in message and message.lstrip().startswith("t="):
        return
    print(f"[subway] {message}", file=sys.stderr, flush=True)
