"""`testbed lb SPEC [SPEC ...]`: run balancer experiments and print their outcome counts; with
several specs, a table of outcome classes per spec at the end."""

from __future__ import annotations

import argparse
from pathlib import Path

from testbed.errors import SpecError
from testbed.spec_sections import distinct_names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("specs", nargs="+", metavar="SPEC",
                        help="balancer specs, e.g. experiments/lb/token.toml (or experiments/lb/*.toml)")
    parser.add_argument("--out", default=None,
                        help="results directory (default results/lb): <out>/<spec name>/result.json")
    parser.add_argument("--connections", type=int, help="override [traffic] connections")
    parser.add_argument("--capture", action="store_true", help="keep balancer.pcap (tcpdump on the balancer)")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from testbed.balancer.experiment import format_counts, format_table, load_spec, run_lb

    if args.connections is not None and args.connections < 1:
        raise SpecError(f"--connections must be at least 1, got {args.connections}")
    loaded = [load_spec(Path(path)) for path in args.specs]  # every spec checked before any run
    distinct_names(spec.name for spec, _topo in loaded)
    base = Path(args.out) if args.out else Path("results") / "lb"
    results = []
    for spec, topo in loaded:
        if args.connections is not None:
            spec = replace(spec, connections=args.connections)
        result = run_lb(spec, topo, base / spec.name, capture=args.capture)
        results.append(result)
        print(format_counts(result))
        print(f"results in {base / spec.name}/result.json", flush=True)
    if len(results) > 1:
        print()
        print(format_table(results))
    return 0
