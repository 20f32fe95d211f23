"""`testbed probe --target kernel|kernel@VERSION|python|command:NAME [--stacks FILE] --out DIR
[--probes a,b] [--list]`."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from testbed.probe.catalogue import VERDICTS, load
from testbed.probe.run import run_probes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", help="kernel | python | kernel@VERSION | command:NAME")
    parser.add_argument("--out", type=Path, help="directory for probes.json and probes.md")
    parser.add_argument("--probes", default="", help="comma-separated probe names (default: all)")
    parser.add_argument("--stacks", type=Path, default=None,
                        help="TOML file with [stacks.NAME] tables for command:NAME targets "
                             "(docs/command-endpoints.md)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the prober's keys and ISNs")
    parser.add_argument("--list", action="store_true", help="list the probes and exit")


def run(args: argparse.Namespace) -> int:
    from testbed.probe.bed import ProbeError

    if args.list:
        for probe in load().values():
            print(f"{probe.name:28} {probe.group:11} {probe.rfc:24} {probe.expected}")
        return 0
    if not args.target or args.out is None:
        raise ProbeError("testbed probe needs --target (kernel, kernel@VERSION, python or command:NAME) "
                         "and --out DIR")
    names = [name.strip() for name in args.probes.split(",") if name.strip()]
    from testbed.probe.command_target import load_stacks
    from testbed.runner import sigterm_as_interrupt

    with sigterm_as_interrupt():  # SIGTERM tears down like Ctrl-C
        stacks = load_stacks(args.stacks) if args.stacks is not None else None
        rows = run_probes(args.target, names or None, args.out, seed=args.seed, stacks=stacks)
    counts = Counter(row["verdict"] for row in rows)
    for row in rows:
        print(f"{row['verdict']:16} {row['name']:28} {row['observed']}")
    print(f"{len(rows)} probes against {args.target}: " +
          ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts[v] or v in VERDICTS[:4]) +
          f"; {args.out / 'probes.json'}")
    return 0
