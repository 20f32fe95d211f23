"""`testbed simult`: the idea of the Linux selftest simult_flows.sh, on this testbed.

Each case gives two_path's paths a rate and a one-way delay; a fixed-size upload must finish
within size*8*10 / (9*(r1+r2)) seconds (the aggregate rate less 10% for headers, as in the
selftest) plus a slack that covers connection and MP_JOIN set-up. A case fails when it is
slower, when MPTCP was not used, or when the payload arrived damaged. The cases are declared in
experiments/simult_flows.toml; every case keeps its own result directory, and simult.json holds
the table.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.errors import EnvironmentProblem, RunFailed, SpecError
from testbed.results import write_json_atomic
from testbed.runner import ENDPOINT_MODULES, run_experiment
from testbed.spec import ExperimentSpec, parse_spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_SPEC = Path(__file__).resolve().parents[2] / "experiments" / "simult_flows.toml"
SIMULT_FILE = "simult.json"
STACK_CHOICES = ("kernel", "python")


@dataclass(frozen=True)
class SimultCase:
    name: str
    rates_mbit: tuple[float, float]
    delays_ms: tuple[float, float]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "rates_mbit": list(self.rates_mbit), "delays_ms": list(self.delays_ms)}


@dataclass(frozen=True)
class SimultPlan:
    base: dict[str, Any]  # an experiment spec without topology params and traffic size
    bytes: int
    slack_s: float
    cases: tuple[SimultCase, ...]
    source: str


def time_limit_s(size_bytes: int, rates_mbit: tuple[float, float], slack_s: float) -> float:
    """The selftest's bound: bits over the aggregate rate less 10% header overhead, plus slack."""
    return size_bytes * 8 * 10 / (9 * (rates_mbit[0] + rates_mbit[1]) * 1e6) + slack_s


def load_plan(path: str | Path) -> SimultPlan:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise SpecError(f"{path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: malformed TOML: {exc}") from exc
    return parse_plan(raw, source=str(path))


def parse_plan(raw: dict[str, Any], *, source: str = "<simult>") -> SimultPlan:
    raw = copy.deepcopy(raw)
    simult = raw.pop("simult", None)
    cases_raw = raw.pop("cases", None)
    if not isinstance(simult, dict):
        raise SpecError(f"{source}: needs a [simult] table (bytes, slack_s)")
    allowed = {"bytes", "slack_s"}
    for key in simult:
        if key not in allowed:
            raise SpecError(f"{source}: [simult]: unknown key {key!r} "
                            f"(allowed: {', '.join(sorted(allowed))})")
    size, slack = simult.get("bytes"), simult.get("slack_s", 1.0)
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise SpecError(f"{source}: [simult].bytes must be a positive integer")
    if not isinstance(slack, (int, float)) or slack < 0:
        raise SpecError(f"{source}: [simult].slack_s must be a number >= 0")
    if not isinstance(cases_raw, list) or not cases_raw:
        raise SpecError(f"{source}: needs at least one [[cases]] table")
    cases = []
    for i, item in enumerate(cases_raw):
        where = f"{source}: cases[{i}]"
        if not isinstance(item, dict) or set(item) != {"name", "rates_mbit", "delays_ms"}:
            raise SpecError(f"{where}: needs exactly name, rates_mbit = [r1, r2], delays_ms = [d1, d2]")
        pairs = []
        for key in ("rates_mbit", "delays_ms"):
            value = item[key]
            if (not isinstance(value, list) or len(value) != 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
                raise SpecError(f"{where}.{key}: must be a list of two numbers")
            pairs.append((float(value[0]), float(value[1])))
        if min(pairs[0]) <= 0 or min(pairs[1]) < 0:
            raise SpecError(f"{where}: rates must be > 0 and delays >= 0")
        cases.append(SimultCase(str(item["name"]), pairs[0], pairs[1]))
    traffic = raw.get("traffic", {})
    if isinstance(traffic, dict) and ("bytes" in traffic or "seconds" in traffic):
        raise SpecError(f"{source}: [traffic] must not set bytes or seconds ([simult].bytes does)")
    plan = SimultPlan(raw, size, float(slack), tuple(cases), source)
    for stack in STACK_CHOICES:
        case_spec(plan, plan.cases[0], stack)  # validates the base spec before anything runs
    return plan


def case_spec(plan: SimultPlan, case: SimultCase, stack: str,
              direction: str | None = None) -> ExperimentSpec:
    """The experiment of one case; `direction` (upload/download) overrides the base spec's."""
    raw = copy.deepcopy(plan.base)
    topology = raw.setdefault("topology", {})
    params = topology.setdefault("params", {}) if isinstance(topology, dict) else {}
    params["path_a"] = {"rate_mbit": case.rates_mbit[0], "delay_ms": case.delays_ms[0]}
    params["path_b"] = {"rate_mbit": case.rates_mbit[1], "delay_ms": case.delays_ms[1]}
    raw.setdefault("traffic", {})["bytes"] = plan.bytes
    if direction is not None:
        raw["traffic"]["direction"] = direction
    for endpoint in raw.get("endpoints", []):
        if isinstance(endpoint, dict):
            endpoint["stack"] = stack
    suffix = f"-{direction}" if direction else ""
    raw["name"] = f"{raw.get('name', 'simult_flows')}-{stack}-{case.name}{suffix}"
    return parse_spec(raw, source=f"{plan.source} [{case.name}]")


def judge(case: SimultCase, stack: str, plan: SimultPlan, result: dict[str, Any]) -> dict[str, Any]:
    """One row of the table: time against the limit, and why a case failed."""
    connection = result["connections"][0]
    limit = time_limit_s(plan.bytes, case.rates_mbit, plan.slack_s)
    duration = float(connection["duration_s"])
    problems = []
    if connection["outcome"] != "mptcp":
        problems.append(f"outcome {connection['outcome']}")
    if connection["integrity"] != "ok":
        problems.append(f"integrity {connection['integrity']}")
    if connection["bytes"] < plan.bytes:
        problems.append(f"only {connection['bytes']} of {plan.bytes} bytes")
    if duration > limit:
        problems.append(f"{duration:.2f} s > limit {limit:.2f} s")
    return {"case": case.name, "stack": stack, **case.as_dict(), "duration_s": round(duration, 3),
            "limit_s": round(limit, 3), "ratio": round(duration / limit, 3),
            "goodput_mbps": connection["goodput_mbps"], "outcome": connection["outcome"],
            "subflow_bytes": [s["bytes"] for s in connection["subflows"]],
            "passed": not problems, "problems": problems}


def failed_row(case: SimultCase, stack: str, plan: SimultPlan, problem: str) -> dict[str, Any]:
    """A case that could not run: no time, its error as the reason."""
    return {"case": case.name, "stack": stack, **case.as_dict(), "duration_s": None,
            "limit_s": round(time_limit_s(plan.bytes, case.rates_mbit, plan.slack_s), 3), "ratio": None,
            "goodput_mbps": None, "outcome": None, "subflow_bytes": [], "passed": False,
            "problems": [f"did not run: {problem}"]}


def format_table(rows: list[dict[str, Any]]) -> str:
    header = (f"{'stack':<7} {'dir':<8} {'case':<26} {'rates Mb/s':>11} {'delays ms':>10} {'time s':>7} "
              f"{'limit s':>8} {'Mb/s':>6}  result")
    lines = [header, "-" * len(header)]
    for r in rows:
        rates = "/".join(f"{v:g}" for v in r["rates_mbit"])
        delays = "/".join(f"{v:g}" for v in r["delays_ms"])
        duration = "-" if r.get("duration_s") is None else f"{r['duration_s']:.2f}"
        verdict = "PASS" if r["passed"] else "FAIL: " + "; ".join(r["problems"])
        lines.append(f"{r['stack']:<7} {r.get('direction', 'upload'):<8} {r['case']:<26} {rates:>11} "
                     f"{delays:>10} {duration:>7} {r['limit_s']:>8.2f} {r.get('goodput_mbps') or 0:>6.1f}  "
                     f"{verdict}")
    passed = sum(1 for r in rows if r["passed"])
    lines.append(f"{passed}/{len(rows)} cases within their limit")
    return "\n".join(lines)


def available(stack: str) -> bool:
    return importlib.util.find_spec(ENDPOINT_MODULES[stack]) is not None


def run_plan(plan: SimultPlan, stacks: list[str], out_dir: Path, *, cases: list[str] | None = None,
             directions: tuple[str, ...] = ("upload",), say: Any = print) -> list[dict[str, Any]]:
    """Run every (stack, direction, case); simult.json is rewritten after each, so an
    interrupted run keeps the rows it finished."""
    selected = [c for c in plan.cases if cases is None or c.name in cases]
    if cases is not None and len(selected) != len(set(cases)):
        known = ", ".join(c.name for c in plan.cases)
        raise SpecError(f"unknown case in {cases} (known: {known})")
    rows: list[dict[str, Any]] = []
    runs = [(stack, direction, case) for stack in stacks for direction in directions for case in selected]
    started = time.monotonic()
    for number, (stack, direction, case) in enumerate(runs, start=1):
        left = (time.monotonic() - started) / len(rows) * (len(runs) - len(rows)) if rows else None
        say(f"[simult] {number}/{len(runs)}: {stack} {direction} {case.name} {case.rates_mbit} Mbit/s "
            f"{case.delays_ms} ms" + ("" if left is None else f", about {left:.0f} s left"))
        rows.append(run_case(plan, case, stack, direction, out_dir / stack / direction / case.name))
        row = rows[-1]
        timing = "-" if row["duration_s"] is None else f"{row['duration_s']:.2f} s"
        say(f"[simult]   {timing} (limit {row['limit_s']:.2f} s): "
            f"{'PASS' if row['passed'] else 'FAIL ' + '; '.join(row['problems'])}")
        write_json_atomic(out_dir / SIMULT_FILE, {"schema": 1, "kind": "simult_flows", "source": plan.source,
                                                  "bytes": plan.bytes, "slack_s": plan.slack_s, "rows": rows})
    return rows


def run_case(plan: SimultPlan, case: SimultCase, stack: str, direction: str, out_dir: Path) -> dict[str, Any]:
    spec = case_spec(plan, case, stack, direction)
    try:
        result = run_experiment(spec, out_dir, progress=lambda _message: None)
    except (EnvironmentProblem, RunFailed) as exc:  # this case only; the others still run
        return {**failed_row(case, stack, plan, exc.message), "direction": direction}
    row = judge(case, stack, plan, result)
    row["direction"] = direction
    row["congestion_control"] = result.get("environment", {}).get("tcp_congestion_control")
    return row


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="directory for simult.json and one result per case")
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="cases file (default: %(default)s)")
    parser.add_argument("--stack", choices=(*STACK_CHOICES, "all"), default="all",
                        help="stack of both endpoints; all = kernel, and python when it is installed")
    parser.add_argument("--case", action="append", dest="cases", help="run only this case (repeatable)")
    parser.add_argument("--direction", choices=("upload", "download", "both"), default="upload",
                        help="who sends the 16 MiB (the selftest does both; default: upload)")


def run(args: argparse.Namespace) -> int:
    plan = load_plan(args.spec)
    if args.stack == "all":
        stacks = [s for s in STACK_CHOICES if available(s)]
        for missing in (s for s in STACK_CHOICES if not available(s)):
            print(f"[simult] stack {missing}: skipped, its endpoint program {ENDPOINT_MODULES[missing]} "
                  "is not installed")
    else:
        if not available(args.stack):
            raise SpecError(f"--stack {args.stack}: the endpoint program {ENDPOINT_MODULES[args.stack]} "
                            "is not in this installation yet")
        stacks = [args.stack]
    out_dir = Path(args.out)
    directions = ("upload", "download") if args.direction == "both" else (args.direction,)
    rows = run_plan(plan, stacks, out_dir, cases=args.cases, directions=directions)
    print(format_table(rows))
    print(f"table and rows in {out_dir / SIMULT_FILE}")
    return 0 if all(r["passed"] for r in rows) else 1
