"""`testbed demo prague`: the IETF 80 (Prague, 2011) MPTCP demo, scripted on two_path.

Two 100 Mbit/s paths; link conditions change live while one upload runs (experiments/prague.toml):
1. clean: both paths used, about 190 Mbit/s in total;
2. 1% loss on path a: most traffic moves to path b;
3. the same loss on both: balanced again;
4. loss gone, RTT of path a raised: a dip on a while its window grows, then both full again.

Every run keeps result.json and timeseries.csv (from testbed.runner), and adds prague.json (the
phases, the congestion control used, the per-phase summary) and prague.png. The summary and the
plot are re-derived from those files alone (`--replot DIR`). Exit status 1 when a phase misses
its expectations; 130 when interrupted, with prague.json marked `"interrupted": true`.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from testbed.demo.hol import (
    CAUSE_FILE,
    cause_series,
    read_cause,
    receiver_addresses,
    retransmission_events,
    rto_times,
    window_stats,
    write_cause,
)
from testbed.demo.livegraph import GAUGES, LiveGraph
from testbed.demo.phases import (
    LinkChange,
    Phase,
    PhasedDemo,
    PhaseSummary,
    client_paths,
    format_summary,
    load_demo,
    summarize,
)
from testbed.demo.plot import CausePanel, write_phase_plot
from testbed.errors import SpecError, TestbedError
from testbed.interrupts import latched_interrupts
from testbed.result import RESULT_FILE, read_result
from testbed.results import BIN_S, TIMESERIES_FILE, write_json_atomic
from testbed.runner import ENDPOINT_MODULES, run_experiment

DEFAULT_SPEC = Path(__file__).resolve().parents[2] / "experiments" / "prague.toml"
DEMO_FILE = "prague.json"
PLOT_FILE = "prague.png"
SMOOTH_S = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="directory for result.json, timeseries.csv, "
                        "prague.json and prague.png (with --replot: the directory to re-derive from)")
    parser.add_argument("--live", action="store_true", help="draw per-subflow throughput in the terminal")
    parser.add_argument("--show", default="", metavar="cwnd,rtt",
                        help="with --live: also draw these per-path telemetry panels (cwnd, rtt)")
    parser.add_argument("--stack", choices=("kernel", "python"),
                        help="MPTCP stack of both endpoints (default: the demo file's stacks)")
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC,
                        help="phased demo file (default: %(default)s)")
    parser.add_argument("--phase-seconds", type=float, help="make every phase this long (a short rehearsal)")
    parser.add_argument("--replot", action="store_true",
                        help="do not run: re-derive the summary and the PNG from the files in --out")


def check_stack(stack: str) -> None:
    module = ENDPOINT_MODULES[stack]
    if importlib.util.find_spec(module) is None:
        raise SpecError(f"--stack {stack}: the endpoint program {module} is not in this installation yet")


class _Hooks:
    """Progress and observer callbacks for run_experiment: messages and the live graph."""

    def __init__(self, demo: PhasedDemo, stack: str, live: bool, show: tuple[str, ...] = ()) -> None:
        self.demo, self.stack, self.live, self.show = demo, stack, live, show
        self.graph: LiveGraph | None = None
        self.events: list[str] = []

    def progress(self, message: str) -> None:
        self.events.append(message)
        if self.graph is not None:
            self.graph.status = f"last: {message}"
        else:
            print(f"[prague] {message}", flush=True)

    def observer(self, work_dir: Path, elapsed_s: float) -> None:
        if not self.live:
            return
        if self.graph is None:
            terminal = sys.stdout.isatty()
            self.graph = LiveGraph(work_dir / "client.samples.csv", _client_paths_from_spec(self.demo),
                                   self.demo.phases, self.demo.seconds, color=terminal,
                                   refresh_s=0.25 if terminal else 2.0,  # a log file gets fewer frames
                                   y_max=float(self.demo.spec.topology_params.get("rate_mbit") or 100.0),
                                   title=f"{demo_name(self.demo.spec.name)}, {self.stack} stack: "
                                         f"goodput per path",
                                   show=self.show)
        self.graph.tick(elapsed_s)


def demo_name(spec_name: str) -> str:
    """How titles name the demo: the Prague one by its meeting, a scenario by its spec name."""
    return "IETF 80 Prague demo" if spec_name == "prague" else spec_name


def _client_paths_from_spec(demo: PhasedDemo) -> dict[str, str]:
    from topologies import build_topology

    topo = build_topology(demo.spec.topology, demo.spec.topology_params)
    return client_paths(topo.describe(), demo.spec.client.host)


def _congestion(result: dict[str, Any], stack: str) -> str:
    """The kernel endpoints' controller as the runner recorded it; the Python stack has its own."""
    if stack != "kernel":
        return "of the python stack"
    in_effect = result.get("environment", {}).get("tcp_congestion_control", {})
    return "/".join(sorted(set(in_effect.values()))) or "unrecorded"


def read_timeseries(path: Path) -> list[dict[str, Any]]:
    try:
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))
    except OSError as exc:
        raise TestbedError(f"cannot read {path}: {exc.strerror}") from exc


def phases_from_dicts(items: list[dict[str, Any]]) -> tuple[Phase, ...]:
    return tuple(Phase(p["name"], p["title"], float(p["start_s"]), float(p["seconds"]), float(p["settle_s"]),
                       tuple(LinkChange(c["link"], c["set"]) for c in p["changes"]), dict(p["expect"]))
                 for p in items)


def rederive(out_dir: Path) -> tuple[list[PhaseSummary], dict[str, Any]]:
    """Summary table and PNG from result.json, timeseries.csv and prague.json alone."""
    result = read_result(out_dir / RESULT_FILE)
    demo_record = _read_demo_record(out_dir)
    phases = phases_from_dicts(demo_record["phases"])
    rows = read_timeseries(out_dir / TIMESERIES_FILE)
    paths = client_paths(result["topology"])
    bin_s = float(result.get("timeseries", {}).get("bin_s", BIN_S))
    summaries = summarize(phases, rows, paths, bin_s)
    passed = all(s.passed for s in summaries)
    title = (f"{demo_name(str(result.get('name', 'demo')))}: {demo_record['stack']} stack, "
             f"cc {_congestion(result, demo_record['stack'])}: "
             f"{'PASS' if passed else 'FAIL'}")
    smooth_s = float(demo_record.get("plot", {}).get("smooth_s", SMOOTH_S))  # the stored plot spec
    cause = cause_panel(out_dir, result, phases, rows, paths, bin_s)
    write_phase_plot(out_dir / PLOT_FILE, rows, paths, bin_s, summaries, title, smooth_s=smooth_s,
                     cause=cause)
    return summaries, result


def cause_panel(out_dir: Path, result: dict[str, Any], phases: tuple[Phase, ...], rows: list[dict[str, Any]],
                paths: dict[str, str], bin_s: float) -> CausePanel | None:
    """The head-of-line cause (testbed.demo.hol) when the run kept a capture: hol_cause.csv,
    derived from capture.pcap once; None for a run without a capture."""
    cause_file, capture = out_dir / CAUSE_FILE, out_dir / "capture.pcap"
    if cause_file.exists():
        cause_rows = read_cause(cause_file)
    elif capture.exists():
        spec = result.get("spec", {})
        upload = spec.get("traffic", {}).get("direction", "upload") == "upload"
        role = "server" if upload else "client"
        host = next((e.get("host", role) for e in spec.get("endpoints", []) if e.get("role") == role), role)
        cause_rows = cause_series(capture, receiver_addresses(result["topology"], host), bin_s, paths)
        write_cause(cause_file, cause_rows)
    else:
        return None
    lossy = lossy_path(phases)
    return CausePanel(cause_rows, retransmission_events(rows, paths, lossy), lossy)


def sender_counters(result: dict[str, Any]) -> str:
    """The sending kernel's timeouts and MPTCP-level retransmissions over the whole run."""
    upload = result.get("spec", {}).get("traffic", {}).get("direction", "upload") == "upload"
    role = "client" if upload else "server"
    counters = (result["connections"][0].get("counters") or {}).get(role) or {}
    names = ("TcpExtTCPTimeouts", "MPTcpExtMPTCPRetrans", "MPTcpExtSubflowStale", "MPTcpExtSubflowRecover")
    return f"the sender ({role}), whole run: " + ", ".join(f"{n} {counters.get(n, 0)}" for n in names)


def lossy_path(phases: tuple[Phase, ...]) -> str:
    """The first link a phase makes lossy: the one whose retransmissions and RTOs are marked."""
    return next((c.link for p in phases for c in p.changes if float(c.set.get("loss_pct", 0)) > 0), "a")


def format_cause(summaries: list[PhaseSummary], cause: CausePanel) -> str:
    """Per phase: the largest backlog, the smallest window, and retransmissions on the lossy path."""
    retrans_header = f"retrans on {cause.lossy_path}"
    rto_header = f"RTO-like on {cause.lossy_path}"
    lines = [f"{'phase':<10} {'backlog KiB median':>18} {'max':>7} {'min window KiB':>15} "
             f"{retrans_header:>14} {rto_header:>14}"]
    rtos = rto_times(cause.rows, cause.lossy_path)
    for s in summaries:
        stats = window_stats(cause.rows, s.phase.window)
        start, end = s.phase.window
        retrans = sum(n for t, n in cause.retransmissions if start - 1e-9 <= t < end - 1e-9)
        timeouts = sum(1 for t in rtos if start - 1e-9 <= t < end - 1e-9)
        lines.append(f"{s.phase.name:<10} {stats['median_backlog_kib']:>18.1f} "
                     f"{stats['max_backlog_kib']:>7.1f} {stats['min_window_kib']:>15.1f} {retrans:>14} "
                     f"{timeouts:>14}")
    return "\n".join(lines)


def parse_show(text: str, live: bool) -> tuple[str, ...]:
    """`--show cwnd,rtt` as panel names; a SpecError naming the problem otherwise."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in GAUGES]
    if unknown:
        raise SpecError(f"--show {text}: unknown panel {', '.join(unknown)}; use a comma list of "
                        f"{', '.join(GAUGES)}")
    if names and not live:
        raise SpecError(f"--show {text} draws panels of the live graph: add --live")
    return names


def run_demo(demo: PhasedDemo, out_dir: Path, *, stack: str, live: bool,
             show: tuple[str, ...] = ()) -> tuple[list[PhaseSummary], dict]:
    hooks = _Hooks(demo, stack, live, show)
    out_dir.mkdir(parents=True, exist_ok=True)
    for older in (CAUSE_FILE, DEMO_FILE):  # derived from this run, never an older one's
        (out_dir / older).unlink(missing_ok=True)
    result = run_experiment(demo.spec, out_dir, progress=hooks.progress, observer=hooks.observer)
    write_json_atomic(out_dir / DEMO_FILE, {
        "schema": 1, "kind": "prague-demo", "stack": stack, "spec_source": demo.spec.source,
        "phases": [p.as_dict() for p in demo.phases],
        "plot": {"file": PLOT_FILE, "smooth_s": SMOOTH_S, "from": [TIMESERIES_FILE, RESULT_FILE, DEMO_FILE]},
        "events": hooks.events,
    })
    summaries, result = rederive(out_dir)
    record = _read_demo_record(out_dir)
    record["summary"] = [s.as_dict() for s in summaries]
    if (out_dir / CAUSE_FILE).exists():  # the head-of-line cause per phase (testbed.demo.hol)
        cause_rows = read_cause(out_dir / CAUSE_FILE)
        record["cause"] = {s.phase.name: window_stats(cause_rows, s.phase.window) for s in summaries}
        lossy = lossy_path(demo.phases)
        for s in summaries:
            start, end = s.phase.window
            record["cause"][s.phase.name][f"rto_bins_{lossy}"] = sum(
                1 for t in rto_times(cause_rows, lossy) if start - 1e-9 <= t < end - 1e-9)
    record["passed"] = all(s.passed for s in summaries)
    write_json_atomic(out_dir / DEMO_FILE, record)
    return summaries, result


def _read_demo_record(out_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((out_dir / DEMO_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise TestbedError(f"cannot read {out_dir / DEMO_FILE}: {exc}") from exc


def mark_interrupted(out_dir: Path) -> None:
    """prague.json says the demo was interrupted (and did not pass), whatever stage it was in."""
    try:
        record = json.loads((out_dir / DEMO_FILE).read_text())
    except (OSError, ValueError):
        record = {"schema": 1, "kind": "prague-demo"}
    record.update(interrupted=True, passed=False)
    write_json_atomic(out_dir / DEMO_FILE, record)


def run(args: argparse.Namespace) -> int:
    out_dir = Path(args.out)
    if args.replot:
        return _report(out_dir, *rederive(out_dir))
    show = parse_show(args.show, args.live)
    if args.stack is not None:
        check_stack(args.stack)
    demo = load_demo(args.spec, stack=args.stack, phase_seconds=args.phase_seconds)
    with latched_interrupts() as caught:
        try:
            stack = demo.spec.client.stack
            print(f"[prague] {len(demo.phases)} phases, {demo.seconds:.0f} s of "
                  f"{demo.spec.traffic.direction}, {stack} stack"
                  + (f", congestion control {demo.spec.traffic.congestion_control}"
                     if stack == "kernel" and demo.spec.traffic.congestion_control else ""),
                  flush=True)
            if demo.spec.description and demo.spec.name != "prague":
                print(f"[prague] {demo.spec.description}", flush=True)
            summaries, result = run_demo(demo, out_dir, stack=stack, live=args.live, show=show)
            code = _report(out_dir, summaries, result)
            if caught:  # raised where Python swallowed it: the interrupt still counts
                raise KeyboardInterrupt(f"signal {caught[0]}")
        except KeyboardInterrupt:
            out_dir.mkdir(parents=True, exist_ok=True)
            mark_interrupted(out_dir)
            print(f"[prague] interrupted: {out_dir / DEMO_FILE} marked interrupted", flush=True)
            raise
    return code


def _report(out_dir: Path, summaries: list[PhaseSummary],
            result: dict[str, Any]) -> int:
    """Print the outcome, the per-phase summary and the cause panel; the exit status."""
    connection = result["connections"][0]
    print(f"outcome: {connection['outcome']}  integrity: {connection['integrity']}  "
          f"goodput: {connection['goodput_mbps']:.1f} Mbit/s over {connection['duration_s']:.1f} s")
    print(format_summary(summaries))
    if (out_dir / CAUSE_FILE).exists():
        result_rows = read_timeseries(out_dir / TIMESERIES_FILE)
        panel = cause_panel(out_dir, result, tuple(s.phase for s in summaries), result_rows,
                            client_paths(result["topology"]),
                            float(result.get("timeseries", {}).get("bin_s", BIN_S)))
        if panel is not None:
            print(format_cause(summaries, panel))
            print(sender_counters(result))
    print(f"files: {out_dir / RESULT_FILE}, {out_dir / TIMESERIES_FILE}, {out_dir / DEMO_FILE}, "
          f"{out_dir / PLOT_FILE}")
    failed = [s for s in summaries if not s.passed]
    if connection["outcome"] != "mptcp" or connection["integrity"] != "ok":
        print(f"FAIL: the connection was {connection['outcome']} with integrity {connection['integrity']}",
              file=sys.stderr)
        return 1
    return 1 if failed else 0
