"""The `testbed` command: one subcommand per user task; errors are one line with an exit code."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from testbed import __version__
from testbed.errors import SpecError, TestbedError


def cmd_doctor(args: argparse.Namespace) -> int:
    from testbed.doctor import format_report, run_doctor

    report = run_doctor()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(format_report(report))
    if report.problems:
        if not args.json:
            print("testbed doctor: essential capabilities missing (see FAIL lines)", file=sys.stderr)
        return 3
    return 0


def cmd_topo(args: argparse.Namespace) -> int:
    from topologies import TOPOLOGIES, build_topology, topology_parameters

    if args.action == "list":
        for name, builder in TOPOLOGIES.items():
            doc = (sys.modules[builder.__module__].__doc__ or "").strip()
            print(f"{name:<10} {doc.splitlines()[0] if doc else ''}")
        return 0
    if not args.name:
        raise TestbedError("testbed topo show: give a topology name (see `testbed topo list`)")
    params = json.loads(args.params) if args.params else {}
    topo = build_topology(args.name, params)
    described = topo.describe()
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    print(f"{described['name']}: {described['description']} (family {described['family']})")
    print(f"parameters: {json.dumps(topology_parameters(args.name))}")
    if described.get("vip"):  # topology lb: the balancer's virtual address
        print(f"virtual address: {described['vip']} on {described['balancer']}, "
              f"backends {', '.join(described['backends'])}")
    if described.get("proxy"):  # topology proxy: where the converter runs
        print(f"proxy node: {described['proxy']} (every path from the client to the server crosses it)")
    print("nodes:")
    for node in described["nodes"]:
        addresses = ", ".join(node["addresses"]) or "-"
        extra = f"  masquerades {', '.join(node['masquerade'])}" if node.get("masquerade") else ""
        print(f"  {node['name']:<8} {node['kind']:<9} {addresses}{extra}")
    print("links:")
    for link in described["links"]:
        via = f" via {','.join(link['via'])}" if link["via"] else ""
        params_text = ", ".join(f"{k}={v}" for k, v in link["params"].items()
                                if v not in (None, 0, 0.0))
        a_end = " ".join(a for a in (link["a_address"], link.get("a_address6")) if a)
        b_end = " ".join(a for a in (link["b_address"], link.get("b_address6")) if a)
        print(f"  {link['name']:<8} {link['a']} {a_end} <->{via} {link['b']} "
              f"{b_end}  [{params_text or 'unshaped'}]")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from testbed.net.topo import family_label
    from testbed.runner import run_experiment
    from testbed.spec import load_spec

    spec = load_spec(args.spec)
    if args.repeat < 1:
        raise SpecError(f"--repeat must be at least 1, got {args.repeat}")
    if args.repeat > 1:
        return _run_repeated(spec, Path(args.out), args.repeat)
    result = run_experiment(spec, Path(args.out), progress=lambda m: print(f"[testbed] {m}", flush=True),
                            eta=sys.stderr)
    conn = result["connections"][0]
    print(f"outcome: {conn['outcome']}  integrity: {conn['integrity']}  "
          f"goodput: {conn['goodput_mbps']:.1f} Mbit/s  bytes: {conn['bytes']}  "
          f"duration: {conn['duration_s']:.2f} s")
    verdict = conn.get("integrity_verdict") or {}
    if conn["integrity"] != "ok" and verdict.get("description"):
        print(f"  integrity: {verdict['description']}")
    for sub in conn["subflows"]:
        share = sub["bytes"] * 8 / conn["duration_s"] / 1e6 if conn["duration_s"] else 0.0
        family = sub.get("family") or family_label(sub["local"])
        print(f"  subflow {sub['local']} -> {sub['remote']} ({family}): {sub['bytes']} bytes "
              f"(~{share:.1f} Mbit/s)")
    from testbed.analyze.pictures import pictures_or_warning

    pictures, problem = pictures_or_warning(Path(args.out), result)
    names = ", ".join(["result.json", "timeseries.csv", *(p.name for p in pictures
                                                          if p.parent == Path(args.out))])
    print(f"results in {args.out}/ ({names})")
    if problem:
        print(f"testbed run: {problem}", file=sys.stderr)
    expectations = result["expectations"]
    if not expectations["passed"]:
        print("expectations failed: " + "; ".join(expectations["failures"]), file=sys.stderr)
        return 1
    return 4 if problem else 0


def _run_repeated(spec: Any, out: Path, repeat: int) -> int:
    """`testbed run --repeat N`: N runs with derived seeds in OUT/repeat-<i>/, every outcome kept;
    `testbed compare OUT ...` reads them as one entry with a distribution and an interval."""
    import dataclasses

    from testbed.repeats import class_of, repeat_seed, summarize_repeats
    from testbed.runner import run_experiment

    records = []
    failed = 0
    for index in range(repeat):
        seeded = dataclasses.replace(spec, seed=repeat_seed(spec.seed, index))
        result = run_experiment(seeded, out / f"repeat-{index}",
                                progress=lambda m, i=index: print(f"[testbed {i + 1}/{repeat}] {m}",
                                                                  flush=True))
        conn = result["connections"][0]
        failed += not result["expectations"]["passed"]
        records.append(conn)
        print(f"repeat {index + 1}/{repeat} (seed {seeded.seed}): "
              f"{class_of(conn['outcome'], conn['integrity'])} {conn['goodput_mbps']:.1f} Mbit/s")
    summary = summarize_repeats(records)
    goodput = summary.get("goodput", {})
    state = "stable" if summary["stable"] else "unstable"
    print(f"{repeat} runs, {state}: {summary['distribution']}; goodput median "
          f"{goodput.get('median', 0):.1f} Mbit/s, [{goodput.get('low', 0):.1f}, "
          f"{goodput.get('high', 0):.1f}] ({goodput.get('confidence', 0):.0%} confidence)")
    print(f"results in {out}/repeat-*/")
    if failed:
        print(f"expectations failed in {failed} of {repeat} runs", file=sys.stderr)
        return 1
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    from testbed.lab_check import remove_check_vms
    from testbed.net.state import clean

    removed = clean(include_live=args.all) + remove_check_vms(include_live=args.all)
    for item in removed:
        print(f"removed {item}")
    if not removed:
        print("nothing to clean")
    return 0


def cmd_fidelity(args: argparse.Namespace) -> int:
    from testbed.fidelity import format_fidelity, measure

    result = measure(delay_ms=args.delay_ms, loss_pct=args.loss_pct, loss_packets=args.packets)
    print(json.dumps(result, indent=2) if args.json else format_fidelity(result))
    return 0


def cmd_delegated(args: argparse.Namespace) -> int:
    """Subcommands implemented by their own module's `add_arguments(parser)` and `run(args)`."""
    return int(args.delegated_run(args))


# (command words, module with add_arguments/run, help): one table, no registration by import
DELEGATED = (
    ("matrix", "testbed.matrix", "run a fallback matrix: middleboxes x endpoint pairings"),
    ("survey", "testbed.survey.command", "the IETF 87 survey tables for each target, by measurement"),
    ("findings", "testbed.findings_check", "RFC 8684 deviations: list them, or re-check each one"),
    ("compare", "testbed.compare", "compare result or matrix files against a baseline"),
    ("report", "testbed.report.command", "re-derive every plot and table from result files"),
    ("analyze", "testbed.analyze.command", "analyse the MPTCP connections of any pcap/pcapng capture"),
    ("demo prague", "testbed.demo.prague", "the IETF 80 demo with live link changes"),
    ("simult", "testbed.demo.simult", "simult_flows fidelity cases: transfer time against the limit"),
    ("subway", "testbed.subway", "the subway ride: wifi at stations only, cellular all along"),
    ("latency", "testbed.latency", "request/response latency per scheduler, and the redundant one's cost"),
    ("satellite", "testbed.satellite", "satellite delays (600 ms, 3 s, 5 s) beside a terrestrial path"),
    ("kernels", "testbed.kernels", "Debian kernels for VMs: list what is here, fetch (never installed)"),
    ("vm run", "testbed.vm", "boot a VM with a stock Debian kernel (real netem) and run a command"),
    ("remote run", "testbed.remote.cli", "run a matrix sharded over lab hosts by SSH (Fabric)"),
    ("stack sim", "testbed.sim.cli", "one transfer of the Python stack in the simulated network"),
    ("stack bench", "testbed.sim.bench_command", "segments per second of the protocol core"),
    ("stack wirebench", "testbed.bench_stack", "goodput of the python stack against the kernel on two_path"),
    ("stack membench", "testbed.bench_memory", "the python stack's RSS over one long transfer (10 GB)"),
    ("bench", "testbed.bench.command", "every benchmark in one JSON; --compare gates against a baseline"),
    ("fuzz", "testbed.fuzz.command", "structure-aware fuzzing of the decoders, handlers and spec loaders"),
    ("soak", "testbed.soak.command", "long run under flaps, NAT timeouts, box toggles: leaks, RSS, verdicts"),
    ("probe", "testbed.probe.command", "MPTCP conformance probes against the kernel or the python stack"),
    ("lb", "testbed.balancer.command", "layer-4 load balancer before MPTCP backends: join outcome counts"),
    ("proxy", "testbed.proxy.command", "MPTCP converter proxy before a legacy server: goodput, cut, latency"),
    ("lab", "testbed.lab_vagrant", "the Vagrant lab on libvirt: set up, build the box, up, demo, destroy"),
)
GROUP_HELP = {
    "demo": "scripted demonstrations",
    "vm": "a VM with a stock Debian kernel",
    "remote": "a lab of several machines over SSH",
    "stack": "the bundled Python MPTCP stack: simulated, and benchmarked on the wire",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="testbed", description="MPTCP middlebox testbed")
    parser.add_argument("--version", action="version", version=f"testbed {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    doctor = sub.add_parser("doctor", help="probe this machine and choose link-emulation backends")
    doctor.add_argument("--json", action="store_true")
    doctor.set_defaults(func=cmd_doctor)

    topo = sub.add_parser("topo", help="list or show the named topologies")
    topo.add_argument("action", choices=("list", "show"))
    topo.add_argument("name", nargs="?")
    topo.add_argument("--params", help='topology parameters as JSON, e.g. \'{"rate_mbit": 50}\'')
    topo.add_argument("--json", action="store_true")
    topo.set_defaults(func=cmd_topo)

    run = sub.add_parser("run", help="run one experiment spec (TOML)")
    run.add_argument("spec")
    run.add_argument("--out", required=True, help="directory for result.json and time series")
    run.add_argument("--repeat", type=int, default=1, metavar="N",
                     help="run N times with derived seeds (OUT/repeat-<i>/); prints the class "
                     "distribution and the goodput median with its interval")
    run.set_defaults(func=cmd_run)

    clean = sub.add_parser("clean", help="remove what crashed or killed runs left behind")
    clean.add_argument("--all", action="store_true", help="also runs whose runner is still alive")
    clean.set_defaults(func=cmd_clean)

    fidelity = sub.add_parser("fidelity", help="measure delay and loss emulation accuracy on two_path")
    fidelity.add_argument("--delay-ms", type=float, default=10.0, help="one-way delay on path a")
    fidelity.add_argument("--loss-pct", type=float, default=1.0)
    fidelity.add_argument("--packets", type=int, default=100_000, help="packets for the loss figure")
    fidelity.add_argument("--json", action="store_true")
    fidelity.set_defaults(func=cmd_fidelity)

    groups: dict[str, argparse._SubParsersAction] = {}
    for words, module_name, text in DELEGATED:
        *group, name = words.split()
        target = sub
        if group:
            if group[0] not in groups:
                group_parser = sub.add_parser(group[0], help=GROUP_HELP[group[0]])
                groups[group[0]] = group_parser.add_subparsers(dest=f"{group[0]}_command", required=True)
            target = groups[group[0]]
        module = importlib.import_module(module_name)
        command = target.add_parser(name, help=text)
        module.add_arguments(command)
        command.set_defaults(func=cmd_delegated, delegated_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except TestbedError as exc:
        print(f"testbed: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("testbed: interrupted; everything this run created was removed", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of the output left (`testbed findings | head`): stop quietly, as `ls` does;
        # what the command built was torn down on the way out. stdout goes to /dev/null so the
        # interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a writer killed by the signal


if __name__ == "__main__":
    sys.exit(main())
