"""`testbed compare BASELINE CURRENT [--tolerance PCT] [--junit FILE]`: the CI regression gate.

Both sides are result files, matrix files, or directories holding them (a matrix directory, a
run directory, or a tree of run directories). Each side becomes a set of entries keyed by name
(a matrix cell "row x pairing", a run's name, or its path in a tree), each with an outcome class
and a goodput. The rules:

- the class ("OUTCOME · INTEGRITY") must match exactly (an error cell matches only an error
  cell); with repeats (`--repeat N`) the distributions are compared: a class the current side
  shows that the baseline never showed is a regression;
- goodput may fall by at most the tolerance (percent of the baseline, default 10), with a small
  absolute floor so that near-zero goodputs (a reset, a stall) do not fail on noise; a rise past
  the tolerance is reported, and fails only with --fail-on-faster. With repeats each side is a
  median with a confidence interval (testbed.repeats), and only intervals that separate by
  more than the tolerance count; a single run is an interval of one point;
- an entry of the baseline missing from the current side is a regression; a new entry is not.

Exit 1 on any regression, 0 otherwise, 2 for unreadable input. The JUnit file has one test
case per entry, so a CI system shows which cell regressed.
"""

from __future__ import annotations

import argparse
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.errors import SpecError, TestbedError
from testbed.repeats import UNSTABLE, class_of, distribution, median_interval
from testbed.report.files import write_bytes_atomic
from testbed.report.summary import summarize_result
from testbed.result import RESULT_FILE, check_document, read_json_document

MATRIX_FILE = "matrix.json"
REPEAT_KEY = re.compile(r"^repeat-\d+$")
DEFAULT_TOLERANCE_PCT = 10.0
DEFAULT_FLOOR_MBPS = 0.5
EXIT_REGRESSION = 1


class CompareInputError(SpecError):
    """Unreadable or unrecognised input to compare (exit 2, like any bad input)."""


@dataclass(frozen=True)
class Entry:
    key: str
    status: str  # "ok" | "error" | "not-run"
    outcome: str | None  # the class: "OUTCOME" or "OUTCOME · INTEGRITY" (or unstable)
    goodput_mbps: float | None  # the median with repeats
    detail: str = ""
    classes: tuple[str, ...] = ()  # one per repeat (empty: a single run, `outcome` is its class)
    goodputs: tuple[float, ...] = ()  # one per repeat

    @property
    def distribution(self) -> dict[str, int]:
        return distribution(self.classes or ((self.outcome,) if self.outcome else ()))

    def interval(self) -> tuple[float, float] | None:
        if len(self.goodputs) > 1:
            found = median_interval(self.goodputs)
            return found.low, found.high
        return None if self.goodput_mbps is None else (self.goodput_mbps, self.goodput_mbps)


@dataclass(frozen=True)
class Difference:
    key: str
    verdict: str  # "regression" | "faster" | "new" | "same"
    what: str
    baseline: Entry | None
    current: Entry | None

    @property
    def regression(self) -> bool:
        return self.verdict == "regression"


def _load_json(path: Path) -> dict[str, Any]:
    """A result (upgraded to the current schema) or matrix document; bad input is a usage error."""
    try:
        return check_document(read_json_document(path), str(path))
    except TestbedError as exc:
        raise CompareInputError(exc.message) from exc


def entries_from_matrix(doc: dict[str, Any], where: str) -> dict[str, Entry]:
    if not isinstance(doc.get("cells"), list):
        raise CompareInputError(f"{where}: matrix file without cells")
    entries = {}
    for cell in doc["cells"]:
        key = f"{cell.get('row')} \u00d7 {cell.get('pairing')}"
        status = str(cell.get("status", "ok"))
        repeats = [r for r in cell.get("repeats") or [] if r.get("status") == "ok"]
        entries[key] = Entry(
            key, status, class_of(cell["outcome"], cell.get("integrity")) if status == "ok" else None,
            cell.get("goodput_mbps") if status == "ok" else None,
            str(cell.get("error", "")) if status == "error" else "",
            tuple(class_of(r["outcome"], r.get("integrity")) for r in repeats),
            tuple(float(r["goodput_mbps"]) for r in repeats))
    return entries


def entries_from_result(result: dict[str, Any], key: str, where: str) -> dict[str, Entry]:
    try:
        summary = summarize_result(result, where)
    except TestbedError as exc:
        raise CompareInputError(exc.message) from exc
    if len(summary.connections) == 1:
        conn = summary.connections[0]
        return {key: Entry(key, "ok", class_of(conn.outcome, conn.integrity), conn.goodput_mbps)}
    return {f"{key}#{i}": Entry(f"{key}#{i}", "ok", class_of(c.outcome, c.integrity), c.goodput_mbps)
            for i, c in enumerate(summary.connections)}


def group_repeats(entries: dict[str, Entry], root: str = ".") -> dict[str, Entry]:
    """Runs in <name>/repeat-<i>/ (`testbed run --repeat N`) become one entry <name> with every
    repeat's class and goodput (`root`, the directory's own name, for repeats right below it)."""
    groups: dict[str, list[Entry]] = {}
    for key, entry in entries.items():
        parent, _slash, leaf = key.rpartition("/")
        group = (parent or root) if REPEAT_KEY.match(leaf) else key
        groups.setdefault(group, []).append(entry)
    out = {}
    for key, members in groups.items():
        if len(members) == 1 and members[0].key == key:
            out[key] = members[0]
            continue
        ran = [m for m in members if m.status == "ok"]
        if not ran:
            out[key] = Entry(key, members[0].status, None, None, members[0].detail)
            continue
        classes = tuple(str(m.outcome) for m in ran)
        goodputs = tuple(float(m.goodput_mbps) for m in ran if m.goodput_mbps is not None)
        single = len(set(classes)) == 1
        out[key] = Entry(key, "ok", classes[0] if single else UNSTABLE,
                         median_interval(goodputs).median if goodputs else None, "", classes, goodputs)
    return out


def load_entries(path: Path) -> tuple[str, dict[str, Entry]]:
    """(kind, entries) of a result file, matrix file or directory; kind is 'matrix' or 'results'."""
    if path.is_dir():
        if (path / MATRIX_FILE).exists():
            return "matrix", entries_from_matrix(_load_json(path / MATRIX_FILE), str(path / MATRIX_FILE))
        if (path / RESULT_FILE).exists():
            result = _load_json(path / RESULT_FILE)
            return "results", entries_from_result(result, str(result.get("name") or path.name), str(path))
        found = sorted(path.rglob(RESULT_FILE))
        if not found:
            raise CompareInputError(f"{path}: no {MATRIX_FILE} or {RESULT_FILE} in it or below it")
        entries: dict[str, Entry] = {}
        for file in found:
            key = file.parent.relative_to(path).as_posix()
            entries.update(entries_from_result(_load_json(file), key, str(file)))
        return "results", group_repeats(entries, path.resolve().name)
    if not path.exists():
        raise CompareInputError(f"{path}: no such file or directory")
    data = _load_json(path)
    if data.get("kind") == "matrix":
        return "matrix", entries_from_matrix(data, str(path))
    return "results", entries_from_result(data, str(data.get("name") or path.stem), str(path))


def _fmt(entry: Entry | None) -> str:
    if entry is None:
        return "-"
    if entry.status != "ok":
        return entry.status + (f" ({entry.detail[:40]})" if entry.detail else "")
    goodput = f"{entry.goodput_mbps:.1f} Mbit/s" if entry.goodput_mbps is not None else "?"
    interval = entry.interval() if len(entry.goodputs) > 1 else None
    if interval is not None:
        goodput += f" [{interval[0]:.1f}, {interval[1]:.1f}]"
    if entry.outcome == UNSTABLE:
        return f"unstable {entry.distribution} {goodput}"
    return f"{entry.outcome} {goodput}"


def compare_entry(key: str, base: Entry | None, cur: Entry | None, tolerance_pct: float, floor_mbps: float,
                  fail_on_faster: bool) -> Difference:
    if base is None:
        return Difference(key, "new", "not in the baseline", None, cur)
    if cur is None:
        return Difference(key, "regression", "missing from the current results", base, None)
    if base.status != cur.status:
        return Difference(key, "regression", f"status {base.status} -> {cur.status}", base, cur)
    if base.status != "ok":
        return Difference(key, "same", f"{base.status} in both", base, cur)
    base_classes, cur_classes = base.distribution, cur.distribution
    if set(cur_classes) - set(base_classes):
        what = (f"class {base.outcome} -> {cur.outcome}" if len(base_classes) == len(cur_classes) == 1
                else f"classes {base_classes} -> {cur_classes}")
        return Difference(key, "regression", what, base, cur)
    base_interval, cur_interval = base.interval(), cur.interval()
    if base_interval is None or cur_interval is None or base.goodput_mbps is None \
            or cur.goodput_mbps is None:
        return Difference(key, "same", "no goodput to compare", base, cur)
    allowed = max(abs(base.goodput_mbps) * tolerance_pct / 100.0, floor_mbps)
    change = cur.goodput_mbps - base.goodput_mbps
    pct = (change / base.goodput_mbps * 100.0) if base.goodput_mbps else float("inf")
    repeated = len(base.goodputs) > 1 or len(cur.goodputs) > 1
    how = " (confidence intervals apart)" if repeated else ""
    if cur_interval[1] < base_interval[0] - allowed:
        return Difference(key, "regression", f"goodput {pct:+.1f}%{how} (tolerance {tolerance_pct:g}%)",
                          base, cur)
    if cur_interval[0] > base_interval[1] + allowed:
        verdict = "regression" if fail_on_faster else "faster"
        return Difference(key, verdict, f"goodput {pct:+.1f}%{how} (tolerance {tolerance_pct:g}%)",
                          base, cur)
    return Difference(key, "same", f"goodput {pct:+.1f}%" + (" (intervals overlap)" if repeated else ""),
                      base, cur)


def compare(baseline: dict[str, Entry], current: dict[str, Entry], *,
            tolerance_pct: float = DEFAULT_TOLERANCE_PCT, floor_mbps: float = DEFAULT_FLOOR_MBPS,
            fail_on_faster: bool = False) -> list[Difference]:
    """One Difference per key of either side, in baseline order then new keys."""
    if tolerance_pct < 0:
        raise CompareInputError(f"--tolerance must be >= 0, got {tolerance_pct}")
    keys = list(baseline) + [k for k in current if k not in baseline]
    return [compare_entry(k, baseline.get(k), current.get(k), tolerance_pct, floor_mbps, fail_on_faster)
            for k in keys]


def format_table(differences: list[Difference], *, show_all: bool = False) -> str:
    """A fixed-width table of what changed (everything with show_all)."""
    shown = [d for d in differences if show_all or d.verdict != "same"]
    regressions = sum(1 for d in differences if d.regression)
    footer = (f"{len(differences)} compared: {regressions} regression(s), "
              f"{sum(1 for d in differences if d.verdict == 'faster')} faster, "
              f"{sum(1 for d in differences if d.verdict == 'new')} new, "
              f"{sum(1 for d in differences if d.verdict == 'same')} unchanged")
    if not shown:
        return f"no differences\n{footer}\n"
    header = ("entry", "baseline", "current", "verdict", "what")
    rows = [(d.key, _fmt(d.baseline), _fmt(d.current), d.verdict.upper() if d.regression else d.verdict,
             d.what) for d in shown]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + f"\n{footer}\n"


def junit_xml(differences: list[Difference], *, suite: str = "testbed compare") -> bytes:
    """JUnit XML: one testcase per entry, a <failure> for each regression."""
    root = ET.Element("testsuites")
    failures = sum(1 for d in differences if d.regression)
    suite_el = ET.SubElement(root, "testsuite", name=suite, tests=str(len(differences)),
                             failures=str(failures), errors="0", skipped="0")
    for diff in differences:
        case = ET.SubElement(suite_el, "testcase", classname=suite, name=diff.key)
        if diff.regression:
            failure = ET.SubElement(case, "failure", message=diff.what, type="regression")
            failure.text = f"baseline: {_fmt(diff.baseline)}\ncurrent: {_fmt(diff.current)}\n{diff.what}"
        elif diff.verdict != "same":
            out = ET.SubElement(case, "system-out")
            out.text = (f"{diff.verdict}: {diff.what} (baseline {_fmt(diff.baseline)}, "
                        f"current {_fmt(diff.current)})")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("baseline", help="result.json, matrix.json, or a directory holding them")
    parser.add_argument("current", help="the same kind of input, from the run under test")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE_PCT, metavar="PCT",
                        help="allowed goodput drop in percent of the baseline "
                        f"(default {DEFAULT_TOLERANCE_PCT:g})")
    parser.add_argument("--floor-mbps", type=float, default=DEFAULT_FLOOR_MBPS,
                        help="goodput changes below this many Mbit/s never count (default 0.5)")
    parser.add_argument("--fail-on-faster", action="store_true",
                        help="also fail when goodput rose by more than the tolerance")
    parser.add_argument("--junit", metavar="FILE", help="write JUnit XML for CI")
    parser.add_argument("--all", action="store_true", help="list unchanged entries too")


def run(args: argparse.Namespace) -> int:
    base_kind, baseline = load_entries(Path(args.baseline))
    cur_kind, current = load_entries(Path(args.current))
    if base_kind != cur_kind:
        raise CompareInputError(f"cannot compare a {base_kind} input ({args.baseline}) with a {cur_kind} "
                                f"input ({args.current})")
    differences = compare(baseline, current, tolerance_pct=args.tolerance, floor_mbps=args.floor_mbps,
                          fail_on_faster=args.fail_on_faster)
    print(format_table(differences, show_all=args.all), end="")
    if args.junit:
        write_bytes_atomic(Path(args.junit), junit_xml(differences))
    return EXIT_REGRESSION if any(d.regression for d in differences) else 0


def main(argv: list[str] | None = None) -> int:
    """`python -m` entry: the `testbed compare` command, through the one CLI error handler."""
    from testbed.cli import main as cli_main

    return cli_main(["compare", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
