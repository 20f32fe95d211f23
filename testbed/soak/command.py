"""`testbed soak [--minutes 30] [--out DIR] [--seed S]`: the long-run check of issue 13.

Writes DIR/soak.json (and one result.json per transfer under DIR/transfers/), prints one line
per transfer and a summary, and exits 1 naming each criterion that failed
(testbed.soak.criteria), 2 on bad arguments, 130 when interrupted (soak.json still written).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from testbed.results import write_json_atomic
from testbed.soak.criteria import SOAK_FILE, soak_document, summary_lines
from testbed.soak.schedule import SoakSettings
from testbed.soak.session import run_soak


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=30.0,
                        help="how long to keep the network up and transferring (default 30, at least 2)")
    parser.add_argument("--out", type=Path, default=None,
                        help="directory for soak.json and transfers/ (default soak-<UTC time>)")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed of the timeline, the transfer lengths and the payloads (default 1)")
    parser.add_argument("--rate-mbit", type=float, default=20.0,
                        help="rate of each of the two paths (default 20)")


def run(args: argparse.Namespace) -> int:
    settings = SoakSettings(minutes=args.minutes, seed=args.seed, rate_mbit=args.rate_mbit)
    settings.check()  # a bad argument is a one-line error before anything is built
    out = args.out or Path(time.strftime("soak-%Y%m%dT%H%M%SZ", time.gmtime()))
    record = run_soak(settings, out, progress=lambda line: print(line, flush=True))
    document = soak_document(record)
    write_json_atomic(out / SOAK_FILE, document)
    for line in summary_lines(document):
        print(line)
    print(f"written: {out / SOAK_FILE}")
    if record.interrupted:
        return 130
    failed = [c["name"] for c in document["criteria"] if not c["passed"]]
    if failed:
        print(f"soak failed: {', '.join(failed)}")
        return 1
    return 0
