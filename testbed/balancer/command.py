"""`testbed lb SPEC`: run one balancer experiment and print its outcome counts."""

from __future__ import annotations

import argparse
from pathlib import Path

from testbed.errors import SpecError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="a balancer spec, e.g. experiments/lb/remedy_token.toml")
    parser.add_argument("--out", default=None, help="result directory (default results/lb/<spec name>)")
    parser.add_argument("--connections", type=int, help="override [traffic] connections")
    parser.add_argument("--capture", action="store_true", help="keep balancer.pcap (tcpdump on the balancer)")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from testbed.balancer.experiment import format_counts, load_spec, run_lb

    spec, topo = load_spec(Path(args.spec))
    if args.connections is not None:
        if args.connections < 1:
            raise SpecError(f"--connections must be at least 1, got {args.connections}")
        spec = replace(spec, connections=args.connections)
    out = Path(args.out) if args.out else Path("results") / "lb" / spec.name
    result = run_lb(spec, topo, out, capture=args.capture)
    print(format_counts(result))
    print(f"results in {out}/result.json")
    return 0
