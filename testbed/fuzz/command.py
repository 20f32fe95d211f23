"""`testbed fuzz [TARGET ...] [--inputs N] [--seed S]`: long fuzz campaigns, one per target.

Prints inputs/s, the time taken, the project errors that escaped (expected: the decoders'
own refusals) and each finding with its saved regression vector; exits 1 if anything was
found, so a campaign can gate a CI job.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from testbed.errors import SpecError
from testbed.fuzz.engine import CampaignResult, run_campaign
from testbed.fuzz.targets import TARGETS

DEFAULT_VECTORS = Path("tests/unit/fuzz/vectors")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("targets", nargs="*", metavar="TARGET",
                        help="targets to fuzz (default: all): " + ", ".join(TARGETS))
    parser.add_argument("--inputs", type=int, default=1_000_000,
                        help="inputs per target (default 1000000)")
    parser.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="stop each target after this many seconds")
    parser.add_argument("--vectors", type=Path, default=DEFAULT_VECTORS,
                        help=f"where failing inputs are saved (default {DEFAULT_VECTORS})")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")


def _progress(result: CampaignResult) -> None:
    print(f"  {result.target}: {result.inputs} inputs, {result.seconds:.0f} s, "
          f"{len(result.findings)} findings so far", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    if args.list:
        for target in TARGETS.values():
            print(f"{target.name:28} {target.what}")
        return 0
    unknown = [name for name in args.targets if name not in TARGETS]
    if unknown:
        raise SpecError(f"unknown fuzz target {unknown[0]!r}; `testbed fuzz --list` shows them")
    if args.inputs < 1:
        raise SpecError(f"--inputs must be at least 1, got {args.inputs}")
    results = []
    for name in args.targets or list(TARGETS):
        result = run_campaign(TARGETS[name], args.inputs, args.seed, vectors=args.vectors,
                              deadline_s=args.max_seconds, progress=_progress)
        results.append(result.as_dict())
        escaped = ", ".join(f"{k} {v}" for k, v in sorted(result.escaped.items())) or "none"
        print(f"{name}: {result.inputs} inputs in {result.seconds:.1f} s "
              f"({result.rate:.0f}/s); project errors: {escaped}; "
              f"findings: {len(result.findings)}", flush=True)
        for finding in result.findings.values():
            print(f"  FINDING {finding.signature} x{finding.count}: {finding.message}\n"
                  f"    vector: {finding.vector}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 1 if any(r["findings"] for r in results) else 0
