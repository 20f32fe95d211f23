"""The signal matrix: which commands, at which stages, and what must hold afterwards.

Each `Target` builds its command line in a scratch directory and names its stages; `check`
inspects what the interrupted command left in its output directory and runs what must work
next (a second `testbed run`, a `matrix --resume`). `python -m tests.integration.signals.commands`
runs the whole matrix and prints it as a table (the command behind docs/hardening.md's table).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.integration.signals.harness import (
    PROJECT,
    SIGNALS,
    TESTBED,
    Delivery,
    Stage,
    building,
    cell_log_says,
    deliver,
    read_json,
    said,
    write_matrix,
    write_spec,
)


@dataclass(frozen=True)
class Target:
    name: str
    argv: Callable[[Path], list[str]]  # scratch dir -> command line (output in scratch/out)
    stages: tuple[Stage, ...]
    timeout_s: float = 120.0
    env: tuple[tuple[str, str], ...] = ()


def _run_argv(scratch: Path) -> list[str]:
    return [*TESTBED, "run", str(write_spec(scratch)), "--out", str(scratch / "out")]


def _matrix_argv(scratch: Path) -> list[str]:
    return [*TESTBED, "matrix", str(write_matrix(scratch)), "--out", str(scratch / "out")]


def _prague_argv(scratch: Path) -> list[str]:
    return [*TESTBED, "demo", "prague", "--out", str(scratch / "out"), "--phase-seconds", "1.5"]


def _vm_argv(scratch: Path) -> list[str]:
    return [*TESTBED, "vm", "run", "--cpus", "1", "--memory", "512M", "--timeout", "600", "--",
            "sh", "-c", "echo guest-command-started; sleep 30"]


TRAFFIC = "server listening"
TARGETS = {
    "run": Target("run", _run_argv, (
        Stage("build", building),
        Stage("traffic", said(TRAFFIC), settle_s=0.5),
        Stage("teardown", said("tearing down the network")),
        Stage("results", said("writing the result")),
    )),
    "matrix": Target("matrix", _matrix_argv, (
        Stage("build", building),
        Stage("traffic", cell_log_says(TRAFFIC), settle_s=0.5),
        Stage("teardown", cell_log_says("tearing down the network")),
        Stage("results", cell_log_says("writing the result")),
    ), timeout_s=180),
    "prague": Target("prague", _prague_argv, (
        Stage("build", building),
        Stage("traffic", said(TRAFFIC), settle_s=1.0),
        Stage("teardown", said("tearing down the network")),
        Stage("results", said("writing the result")),
    )),
    "vm": Target("vm", _vm_argv, (
        Stage("boot", said("testbed vm: kernel")),
        Stage("command", said("guest-command-started")),
    ), timeout_s=700, env=(("TESTBED_VM_ACCEL", "tcg"),)),
}


# --- what must hold after the signal ---------------------------------------------------------

def result_problems(delivery: Delivery, out: Path) -> list[str]:
    """A result.json of a run signalled before its transfer ended must be marked interrupted
    (a partial result is never passed off as complete); later, one may be complete."""
    problems = []
    for path in sorted(out.rglob("result.json")):
        result = read_json(path)
        if result is None:
            problems.append(f"{path.relative_to(out)} is not JSON")
        elif delivery.reached and delivery.stage in ("build", "traffic") and not result.get("interrupted") \
                and delivery.command != "matrix":
            problems.append(f"{path.relative_to(out)}: written unmarked by a run stopped at {delivery.stage}")
    return problems


def demo_problems(delivery: Delivery, out: Path) -> list[str]:
    """A prague demo stopped by SIGINT or SIGTERM exits 130 (checked by `attempt`) and its
    prague.json, when there is one, says interrupted (an interrupt swallowed by Python inside a
    weakref callback once let the demo finish as if nothing had happened)."""
    if delivery.signal == "KILL" or not delivery.reached:
        return []
    record = read_json(out / "prague.json")
    if (out / "prague.json").exists() and (record is None or record.get("interrupted") is not True):
        return ["prague.json not marked interrupted"]
    return []


def matrix_problems(delivery: Delivery, scratch: Path) -> list[str]:
    """The matrix document marks the run interrupted (unless killed outright, when it is
    simply partial), and `--resume` reruns every cell that was not finished."""
    out = scratch / "out"
    problems = []
    doc = read_json(out / "matrix.json")
    if doc is not None and delivery.signal != "KILL" and delivery.reached \
            and not (doc.get("interrupted") and doc.get("partial")):
        problems.append("matrix.json not marked interrupted and partial")
    finished = {(c["row"], c["pairing"]) for c in (doc or {}).get("cells", [])}
    # a cell killed after its complete result.json was written, before matrix.json was, may be
    # reused too; one whose result is marked interrupted never
    for path in out.glob("cells/*/*/result.json"):
        result = read_json(path)
        if result is not None and not result.get("interrupted"):
            finished.add((path.parent.parent.name, path.parent.name))
    try:
        done = subprocess.run([*TESTBED, "matrix", str(write_matrix(scratch)), "--out", str(out), "--resume"],
                              cwd=PROJECT, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return [*problems, "matrix --resume took over 600 s"]
    if done.returncode not in (0, 1):
        problems.append(f"matrix --resume exited {done.returncode}: {done.stderr.strip()[-200:]}")
        return problems
    resumed = read_json(out / "matrix.json") or {}
    for cell in resumed.get("cells", []):
        key = (cell["row"], cell["pairing"])
        if cell.get("reused") and key not in finished:
            problems.append(f"--resume reused {key}, which the interrupted matrix had not finished")
        if cell.get("error"):
            problems.append(f"--resume: cell {key} failed: {cell['error']}")
    if resumed.get("partial") or resumed.get("interrupted"):
        problems.append("the resumed matrix is still partial")
    return problems


def second_run_problems(scratch: Path) -> list[str]:
    spec = write_spec(scratch, name="again", seconds=1, delay=0)
    try:
        done = subprocess.run([*TESTBED, "run", str(spec), "--out", str(scratch / "again")], cwd=PROJECT,
                              capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return ["second run took over 300 s"]
    if done.returncode == 0:
        return []
    return [f"second run exited {done.returncode}: {done.stderr.strip()[-200:]}"]


def attempt(target: Target, stage: Stage, sig: str, scratch: Path, *, second_run: bool = True
            ) -> tuple[Delivery, list[str]]:
    """One combination: deliver, account, clean, and check what must hold."""
    out = scratch / "out"
    delivery = deliver(target.name, target.argv(scratch), stage, sig, out, timeout_s=target.timeout_s,
                       env=dict(target.env))
    problems = [f"left after clean: {thing}" for thing in delivery.after_clean]
    if sig != "KILL":  # Ctrl-C and SIGTERM tear down by themselves, before any `testbed clean`
        problems += [f"left after SIG{sig}: {thing}" for thing in delivery.before_clean]
    if delivery.signal != "KILL" and delivery.reached and delivery.exit_code not in (130, -2, -15, 143):
        problems.append(f"exit {delivery.exit_code} after SIG{sig}: {delivery.output.strip()[-300:]}")
    if "Traceback" in delivery.output:
        problems.append("a traceback: " + delivery.output[delivery.output.index("Traceback"):][:400])
    problems += result_problems(delivery, out)
    if target.name == "matrix":
        problems += matrix_problems(delivery, scratch)
    if target.name == "prague":
        problems += demo_problems(delivery, out)
    if second_run:
        problems += second_run_problems(scratch)
    return delivery, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the signal matrix: command x stage x signal")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated: " + ", ".join(TARGETS))
    parser.add_argument("--signals", default="INT,TERM,KILL")
    parser.add_argument("--stages", help="comma-separated stage names (default: each target's all)")
    parser.add_argument("--json", type=Path, help="also write every delivery here")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the signal matrix needs root", file=sys.stderr)
        return 2
    rows, records, failed = [], [], 0
    print("| command | stage | signal | exit | left before clean | left after clean | problems |")
    print("|---|---|---|---|---|---|---|")
    for name in args.targets.split(","):
        target = TARGETS[name]
        for stage in target.stages:
            if args.stages and stage.name not in args.stages.split(","):
                continue
            for sig in args.signals.split(","):
                assert sig in SIGNALS
                with tempfile.TemporaryDirectory(prefix="signals-") as scratch:
                    started = time.monotonic()
                    delivery, problems = attempt(target, stage, sig, Path(scratch))
                failed += bool(problems)
                row = delivery.row() + f" {'; '.join(problems) or 'ok'} |"
                rows.append(row)
                print(row, flush=True)
                records.append({"command": name, "stage": stage.name, "signal": sig,
                                "reached": delivery.reached, "exit": delivery.exit_code,
                                "before_clean": delivery.before_clean, "after_clean": delivery.after_clean,
                                "problems": problems, "seconds": round(time.monotonic() - started, 1)})
    if args.json:
        args.json.write_text(json.dumps(records, indent=2) + "\n")
    print(f"{len(rows) - failed} of {len(rows)} combinations clean", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
