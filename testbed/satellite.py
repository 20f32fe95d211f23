"""`testbed satellite`: a satellite path (600 ms, 3 s, 5 s one way) beside a 20 ms terrestrial one.

Each case is one bulk download (experiments/scenarios/satellite_*.toml, kernel or python stack
at both ends) of a given size, with the satellite path either first (the client's default
route: it carries the MP_CAPABLE handshake and the terrestrial path joins) or second (the
handshake goes over the terrestrial path and the join over the satellite); a terrestrial-only
case per size (one subflow) is the reference. Every case keeps its
result.json and capture.pcap in DIR/<stack>/<case>/; this command reads the handshake, the join,
SYN retransmissions and per-subflow delivery from the captures (testbed.satellite_packets) and
writes satellite.json (the rows), satellite.md (the table with PASS/FAIL expectations) and
satellite.png (new bytes per subflow over time, one panel per case). `--replot` re-derives all
three from the files. Exit 1 when an expectation fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from testbed.errors import SpecError, TestbedError
from testbed.report.files import save_figure
from testbed.result import RESULT_FILE, read_result
from testbed.satellite_packets import SubflowTimes, subflow_times
from testbed.spec import ExperimentSpec, load_spec

SCENARIOS = Path(__file__).resolve().parents[1] / "experiments" / "scenarios"
DELAYS = {"600ms": 600, "3s": 3000, "5s": 5000}
SIZES_MB = (1, 10, 50)
FIRSTS = ("satellite", "terrestrial")
BASELINE = "terrestrial-only"  # the reference: one subflow over the terrestrial path, no satellite
TERRESTRIAL_ADDRESS, SATELLITE_ADDRESS = "10.0.2.1", "10.0.1.1"  # two_path: path b, path a
BIN_S = 0.5
TIMEOUT_S = 60.0
# Seconds after the first SYN at which a stack sends its first SYN without MP_CAPABLE: after
# syn_retrans_before_tcp_fallback = 2 retransmissions. Linux retransmits a SYN every second
# (net.ipv4.tcp_syn_linear_timeouts), the python stack doubles its RTO (1 s, then 2 s). A
# SYN/ACK that comes later than this finds a plain-TCP client: the connection falls back.
MPTCP_SYN_GIVEN_UP_S = {"kernel": 3.0, "python": 7.0}
JSON_FILE, TABLE_FILE, PLOT_FILE = "satellite.json", "satellite.md", "satellite.png"


@dataclass(frozen=True)
class Case:
    stack: str
    delay: str
    first: str
    size_mb: float

    @property
    def name(self) -> str:
        if self.first == BASELINE:
            return f"{BASELINE}-{self.size_mb:g}MB"
        return f"{self.delay}-{self.first}-first-{self.size_mb:g}MB"

    @property
    def delay_ms(self) -> int:
        return DELAYS[self.delay]

    @property
    def expect_fallback(self) -> bool:
        """The satellite carries the handshake and its RTT is longer than the stack offers MPTCP."""
        return self.first == "satellite" and 2 * self.delay_ms / 1000 > MPTCP_SYN_GIVEN_UP_S[self.stack]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path,
                        help="directory for <stack>/<case>/, satellite.json, satellite.md, satellite.png")
    parser.add_argument("--stack", choices=("kernel", "python", "both"), default="both",
                        help="MPTCP stack of both endpoints (default: both)")
    parser.add_argument("--short", action="store_true",
                        help="600 ms only, 2 MB, satellite first and second: the test suite's variant")
    parser.add_argument("--replot", action="store_true",
                        help="do not run: re-derive the table, the JSON and the PNG from the files in --out")


def cases_of(stack_choice: str, short: bool) -> list[Case]:
    stacks = ("kernel", "python") if stack_choice == "both" else (stack_choice,)
    if short:
        return [Case(stack, "600ms", first, 2) for stack in stacks for first in FIRSTS]
    return [Case(stack, delay, first, size) for stack in stacks for delay in DELAYS
            for first in FIRSTS for size in SIZES_MB] + \
        [Case(stack, "600ms", BASELINE, size) for stack in stacks for size in SIZES_MB]


def case_spec(case: Case) -> ExperimentSpec:
    """The delay's spec file for the stack, with the case's size and which path comes first."""
    suffix = "" if case.stack == "kernel" else "_python"
    spec = load_spec(SCENARIOS / f"satellite_{case.delay}{suffix}.toml")
    params = dict(spec.topology_params)
    mptcp = spec.mptcp
    if case.first != "satellite":  # path a is the client's first route: put the terrestrial there
        params["path_a"], params["path_b"] = params["path_b"], params["path_a"]
    if case.first == BASELINE:  # no subflow over path b
        mptcp = replace(mptcp, client_subflow_endpoints=False)
    traffic = replace(spec.traffic, bytes=int(case.size_mb * 1_000_000), seconds=None, timeout_s=TIMEOUT_S)
    return replace(spec, name=f"{spec.name}-{case.name}", topology_params=params, traffic=traffic,
                   mptcp=mptcp)


def measure(case: Case, run_dir: Path) -> dict[str, Any]:
    """The case's row: outcome from result.json, timings from capture.pcap."""
    if not (run_dir / RESULT_FILE).exists():
        raise SpecError(f"{run_dir}: no {RESULT_FILE}; run without --replot first")
    result = read_result(run_dir)
    conn = result["connections"][0]
    capture = run_dir / "capture.pcap"
    subflows = subflow_times(capture, int(result["spec"]["traffic"]["port"]), BIN_S) \
        if capture.exists() and capture.stat().st_size > 24 else []
    satellite = SATELLITE_ADDRESS if case.first == "satellite" else TERRESTRIAL_ADDRESS
    initial = next((s for s in subflows if s.kind != "join"), None)
    join = next((s for s in subflows if s.kind == "join"), None)
    ends = [s.last_payload_s for s in subflows if s.last_payload_s is not None]
    complete = conn["integrity"] == "ok" and conn["bytes"] == int(case.size_mb * 1_000_000)
    completion = max(ends) if complete and ends else None
    total = sum(s.payload_bytes for s in subflows) or 1
    return {
        "case": case.name, "stack": case.stack, "delay": "none" if case.first == BASELINE else case.delay,
        "delay_ms": 0 if case.first == BASELINE else case.delay_ms,
        "first": case.first, "size_mb": case.size_mb, "outcome": conn["outcome"],
        "integrity": conn["integrity"], "bytes": conn["bytes"], "complete": complete,
        "mp_capable": bool(initial and initial.third_ack_mptcp and initial.kind == "mp_capable"),
        "fell_back": bool(initial and initial.fell_back),
        "handshake_s": initial.handshake_s if initial else None,
        "syn_retransmissions": initial.syn_retransmissions if initial else None,
        "synacks": initial.synacks if initial else None,
        "join_start_s": join.syn_times[0] if join else None,
        "join_syn_retransmissions": join.syn_retransmissions if join else None,
        "join_s": join.handshake_s if join and join.third_ack_mptcp else None,
        "join_done_s": (join.fourth_ack_s - join.syn_times[0]) if join and join.fourth_ack_s else None,
        "completion_s": completion,
        "goodput_mbps": round(case.size_mb * 8 / completion, 3) if completion else None,
        "satellite_share": round(sum(s.payload_bytes for s in subflows
                                     if s.client.startswith(satellite + ":")) / total, 4),
        "subflows": [dict(s.as_dict(), path="satellite" if s.client.startswith(satellite + ":")
                          else "terrestrial", bins=_bins(s)) for s in subflows],
    }


def _bins(sub: SubflowTimes) -> list[list[float]]:
    """Every bin from the first to the last with new bytes, empty ones as 0 (a stall shows)."""
    if not sub.bins:
        return []
    return [[round(i * BIN_S, 3), sub.bins.get(i, 0)] for i in range(min(sub.bins), max(sub.bins) + 1)]


def checks_of(case: Case, row: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(what, measured, passed) expectations of one case."""
    checks = [("no corruption", row["integrity"], row["integrity"] in ("ok", "truncated"))]
    handshake = _s(row["handshake_s"])
    if case.expect_fallback:
        given_up = MPTCP_SYN_GIVEN_UP_S[case.stack]
        checks.append((f"falls back to TCP (RTT {2 * case.delay_ms / 1000:g} s > MP_CAPABLE SYNs "
                       f"for {given_up:g} s)", f"MP_CAPABLE {'kept' if row['mp_capable'] else 'dropped'}, "
                       f"{row['syn_retransmissions']} SYN retransmissions", not row["mp_capable"]))
        return checks
    checks.append(("MPTCP handshake", f"{handshake}, {row['syn_retransmissions']} SYN retransmissions",
                   row["mp_capable"]))
    checks.append(("transfer completes, integrity ok", f"{row['bytes']} B in {_s(row['completion_s'])}",
                   row["complete"]))
    if row["join_start_s"] is not None and row["completion_s"] is not None:
        # a join started one join-path RTT before the end should have completed
        join_rtt = 2 * (case.delay_ms if case.first == "terrestrial" else 20) / 1000
        if row["join_start_s"] + join_rtt + 1.0 < row["completion_s"]:
            checks.append(("join completes", f"SYN at {_s(row['join_start_s'])}, done after "
                           f"{_s(row['join_done_s'])}, {row['join_syn_retransmissions']} SYN retransmissions",
                           row["join_done_s"] is not None))
    return checks


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def format_table(rows: list[dict[str, Any]], checks: dict[str, list[tuple[str, str, bool]]]) -> str:
    lines = ["| stack | delay | first | MB | MPTCP | handshake (SYN rtx) | join start | join SYN->ACK "
             "(rtx) | completion | goodput Mbit/s | satellite share |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mptcp = "yes" if r["mp_capable"] else ("fallback" if r["fell_back"] else r["outcome"])
        join = "-" if r["join_start_s"] is None else f"{_s(r['join_s'])} ({r['join_syn_retransmissions']})"
        lines.append(f"| {r['stack']} | {r['delay']} | {r['first']} | {r['size_mb']:g} | {mptcp} | "
                     f"{_s(r['handshake_s'])} ({r['syn_retransmissions']}) | {_s(r['join_start_s'])} | "
                     f"{join} | {_s(r['completion_s']) if r['complete'] else 'incomplete'} | "
                     f"{'-' if r['goodput_mbps'] is None else r['goodput_mbps']} | "
                     f"{r['satellite_share']:.0%} |")
    lines += ["", "| stack | case | check | measured | verdict |", "|---|---|---|---|---|"]
    for r in rows:
        key = f"{r['stack']}/{r['case']}"
        lines += [f"| {r['stack']} | {r['case']} | {what} | {measured} | {'PASS' if ok else 'FAIL'} |"
                  for what, measured, ok in checks[key]]
    return "\n".join(lines) + "\n"


def write_plot(png: Path, rows: list[dict[str, Any]], checks: dict[str, list[tuple[str, str, bool]]]) -> None:
    """One panel per case: new payload bytes per subflow (Mbit/s per BIN_S) against time."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    row_keys = sorted({(r["delay_ms"], r["first"]) for r in rows})
    col_keys = sorted({(r["stack"], r["size_mb"]) for r in rows})
    figure, axes_grid = pyplot.subplots(len(row_keys), len(col_keys), squeeze=False, dpi=90,
                                        figsize=(3.6 * len(col_keys) + 1, 2.4 * len(row_keys) + 1))
    colours = {"satellite": "tab:purple", "terrestrial": "tab:green"}
    try:
        for axes_row in axes_grid:
            for axes in axes_row:
                axes.set_visible(False)
        for r in rows:
            axes = axes_grid[row_keys.index((r["delay_ms"], r["first"]))][col_keys.index((r["stack"],
                                                                                           r["size_mb"]))]
            axes.set_visible(True)
            for sub in r["subflows"]:
                times = [t for t, _b in sub["bins"]]
                rates = [b * 8 / BIN_S / 1e6 for _t, b in sub["bins"]]
                axes.step(times, rates, where="post", color=colours[sub["path"]], linewidth=1.0,
                          label=f"{sub['path']} ({sub['kind']})")
            verdict = "PASS" if all(ok for _w, _m, ok in checks[f"{r['stack']}/{r['case']}"]) else "FAIL"
            axes.set_title(f"{r['stack']} {r['delay']} {r['first']} first {r['size_mb']:g} MB: {verdict}",
                           fontsize=8)
            axes.tick_params(labelsize=7)
            axes.grid(alpha=0.3)
            axes.legend(fontsize=6, loc="upper right")
        for axes in axes_grid[-1]:
            axes.set_xlabel("s since the first SYN", fontsize=7)
        for axes_row in axes_grid:
            axes_row[0].set_ylabel("Mbit/s", fontsize=7)
        figure.suptitle(f"satellite beside terrestrial (20 ms): goodput per subflow, {BIN_S:g} s bins")
        figure.tight_layout()
        save_figure(figure, png)
    finally:
        pyplot.close(figure)


def run(args: argparse.Namespace) -> int:
    cases = cases_of(args.stack, args.short)
    if not args.replot:
        from testbed.runner import run_experiment

        for index, case in enumerate(cases, 1):
            spec = case_spec(case)
            print(f"[satellite] {index}/{len(cases)} {case.stack} {case.name}", flush=True)
            run_experiment(spec, args.out / case.stack / case.name, progress=_quiet_progress)
    rows = [measure(case, args.out / case.stack / case.name) for case in cases]
    checks = {f"{case.stack}/{case.name}": checks_of(case, row)
              for case, row in zip(cases, rows, strict=True)}
    table = format_table(rows, checks)
    try:
        (args.out / JSON_FILE).write_text(json.dumps({"bin_s": BIN_S, "cases": rows}, indent=1) + "\n")
        (args.out / TABLE_FILE).write_text(table)
    except OSError as exc:
        raise TestbedError(f"could not write into {args.out}: {exc.strerror}") from exc
    write_plot(args.out / PLOT_FILE, rows, checks)
    print(table, end="")
    print(f"[satellite] {args.out / PLOT_FILE}, {args.out / TABLE_FILE}, {args.out / JSON_FILE}")
    return 0 if all(ok for rows_ in checks.values() for _w, _m, ok in rows_) else 1


def _quiet_progress(message: str) -> None:
    print(f"[satellite]   {message}", file=sys.stderr, flush=True)
