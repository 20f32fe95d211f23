"""The remote side of `testbed remote run`, run by the controller over SSH as
`python -m testbed.remote.agent probe|matrix --tree=DIR ...` with the shipped tree first on
PYTHONPATH.

`probe` prints one JSON object: which testbed the interpreter imports (it must be the shipped
copy, not some other install), the Python version, and `testbed doctor`'s report.
`matrix` is `testbed matrix` run from the tree, plus one thing a remote run needs: the session
ending (connection lost, controller killed) hangs up its terminal, and SIGHUP would otherwise
kill Python on the spot, leaving namespaces and processes behind. Here SIGHUP goes through the
same teardown as Ctrl-C, with output sent to /dev/null since the terminal is gone.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from types import FrameType

PROBE_VERSION = 1


def probe(tree: str) -> int:
    import testbed
    from testbed.doctor import run_doctor

    report = run_doctor()
    print(json.dumps({
        "agent": PROBE_VERSION,
        "testbed_file": os.path.realpath(testbed.__file__),
        "tree": os.path.realpath(tree),
        "python": sys.version.split()[0],
        "uid": os.geteuid(),
        "doctor": report.as_dict(),
    }))
    return 0


def hangup_as_interrupt() -> None:
    owner = os.getpid()

    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:  # a forked helper (pyroute2) must not run the teardown
            os._exit(128 + signum)
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            os.dup2(devnull, fd)
        raise KeyboardInterrupt("hang-up: the SSH session ended")

    signal.signal(signal.SIGHUP, handler)


def matrix(args: argparse.Namespace) -> int:
    from testbed.cli import main as cli_main

    hangup_as_interrupt()
    os.chdir(args.tree)
    return cli_main(["matrix", args.spec, "--out", args.out, "--rows", args.rows,
                     "--pairings", args.pairings])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="testbed.remote.agent")
    sub = parser.add_subparsers(dest="action", required=True)
    probe_parser = sub.add_parser("probe")
    probe_parser.add_argument("--tree", required=True)
    matrix_parser = sub.add_parser("matrix")
    for option in ("--tree", "--spec", "--out", "--rows", "--pairings"):
        matrix_parser.add_argument(option, required=True)
    args = parser.parse_args(argv)
    if args.action == "probe":
        return probe(args.tree)
    return matrix(args)


if __name__ == "__main__":
    sys.exit(main())
