"""Phased demos: a spec split into phases of live link changes, and per-phase share checks.

A demo file (experiments/prague.toml) is an ordinary experiment spec without `timeline` and
without `traffic.seconds`, plus `[[phases]]`: each phase has a length, the link changes applied
when it starts, a settle time and numeric expectations. The timeline and the transfer length are
derived from the phases, so the two can never disagree.

Everything here is pure: a phase summary is computed from time-series rows (as written to
timeseries.csv) and the client's address per path, so a summary re-derived from the files of a
finished run is the one printed live.
"""

from __future__ import annotations

import copy
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.errors import SpecError
from testbed.net.params import LinkParams
from testbed.spec import ExperimentSpec, parse_spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# min_median_total_mbps: the median of the window's 1-second totals, which a single stall of a
# shared 2-core machine (both paths dip together) does not move, unlike the mean
# max_recovery_s: a change's effect is transient: seconds from the phase start until the path's
# 1-second mean first reaches RECOVERED (80%) of its mean over the check window
# max_path_ratio / min_path_ratio: a path's mean over this window against its own mean over the
# first phase's window (head-of-line blocking: the clean path b slows when path a turns lossy)
EXPECT_KEYS = ("min_total_mbps", "min_median_total_mbps", "max_total_mbps", "share_min", "share_max",
               "min_path_mbps", "max_recovery_s", "max_path_ratio", "min_path_ratio")
PATH_TABLES = ("share_min", "share_max", "min_path_mbps", "max_recovery_s", "max_path_ratio",
               "min_path_ratio")
RECOVERED = 0.8


@dataclass(frozen=True)
class LinkChange:
    link: str
    set: dict[str, Any]


@dataclass(frozen=True)
class Phase:
    """One phase: `changes` are applied at `start_s`; checks use [start_s + settle_s, end_s]."""

    name: str
    title: str
    start_s: float
    seconds: float
    settle_s: float
    changes: tuple[LinkChange, ...] = ()
    expect: dict[str, Any] = field(default_factory=dict)

    @property
    def end_s(self) -> float:
        return self.start_s + self.seconds

    @property
    def window(self) -> tuple[float, float]:
        return (self.start_s + self.settle_s, self.end_s)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "start_s": self.start_s, "seconds": self.seconds,
                "settle_s": self.settle_s, "changes": [{"link": c.link, "set": c.set} for c in self.changes],
                "expect": self.expect}


@dataclass(frozen=True)
class PhasedDemo:
    spec: ExperimentSpec
    phases: tuple[Phase, ...]

    @property
    def seconds(self) -> float:
        return self.phases[-1].end_s


def load_demo(path: str | Path, *, stack: str | None = None,
              phase_seconds: float | None = None) -> PhasedDemo:
    """Read a phased demo file; `stack` replaces both endpoints' stack, `phase_seconds` every
    phase's length (settle times shrink to at most half of it). Errors are one-line SpecErrors."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise SpecError(f"{path}: no such demo file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: malformed TOML: {exc}") from exc
    return parse_demo(raw, source=str(path), stack=stack, phase_seconds=phase_seconds)


def parse_demo(raw: dict[str, Any], *, source: str = "<demo>", stack: str | None = None,
               phase_seconds: float | None = None) -> PhasedDemo:
    raw = copy.deepcopy(raw)
    phases_raw = raw.pop("phases", None)
    if not isinstance(phases_raw, list) or not phases_raw:
        raise SpecError(f"{source}: a phased demo needs at least one [[phases]] table")
    if "timeline" in raw:
        raise SpecError(f"{source}: a phased demo derives its timeline from [[phases]]; remove [[timeline]]")
    traffic = raw.setdefault("traffic", {})
    if not isinstance(traffic, dict) or "seconds" in traffic or "bytes" in traffic:
        raise SpecError(f"{source}: [traffic] of a phased demo must not set seconds or bytes "
                        "(the phases give the length)")
    if phase_seconds is not None and phase_seconds <= 0:
        raise SpecError(f"phase length must be positive, got {phase_seconds}")

    if stack is not None:
        for endpoint in raw.get("endpoints", []):
            if isinstance(endpoint, dict):
                endpoint["stack"] = stack
    client_stack = next((e.get("stack") for e in raw.get("endpoints", [])
                         if isinstance(e, dict) and e.get("role") == "client"), None)
    phases: list[Phase] = []
    start = 0.0
    for i, item in enumerate(phases_raw):
        phase = _parse_phase(item, f"{source}: phases[{i}]", start, phase_seconds, client_stack)
        phases.append(phase)
        start = phase.end_s
    names = [p.name for p in phases]
    if len(set(names)) != len(names):
        raise SpecError(f"{source}: phase names must be unique, got {names}")

    raw["timeline"] = [{"at_s": p.start_s, "link": c.link, "set": c.set} for p in phases for c in p.changes]
    traffic["seconds"] = start
    spec = parse_spec(raw, source=source)
    return PhasedDemo(spec, tuple(phases))


def _parse_phase(item: Any, where: str, start: float, phase_seconds: float | None,
                 stack: str | None) -> Phase:
    """`expect_by_stack.STACK` replaces top-level keys of `expect` when STACK runs (a userspace
    stack on two cores cannot fill 2 x 100 Mbit/s; the shares are the story for both)."""
    allowed = {"name", "title", "seconds", "settle_s", "changes", "expect", "expect_by_stack"}
    if not isinstance(item, dict):
        raise SpecError(f"{where}: must be a table")
    for key in item:
        if key not in allowed:
            raise SpecError(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")
    if not isinstance(item.get("name"), str) or not isinstance(item.get("seconds"), (int, float)):
        raise SpecError(f"{where}: needs name (a string) and seconds (a number)")
    seconds = float(phase_seconds if phase_seconds is not None else item["seconds"])
    settle = float(item.get("settle_s", 0.0))
    if seconds <= 0 or settle < 0:
        raise SpecError(f"{where}: seconds must be > 0 and settle_s >= 0")
    if phase_seconds is not None:
        settle = min(settle, seconds / 2)
    if settle >= seconds:
        raise SpecError(f"{where}: settle_s {settle} leaves nothing of a {seconds} s phase to check")
    changes = []
    for j, change in enumerate(item.get("changes", [])):
        cwhere = f"{where}.changes[{j}]"
        if (not isinstance(change, dict) or set(change) != {"link", "set"}
                or not isinstance(change["set"], dict)):
            raise SpecError(f"{cwhere}: must be {{ link = \"NAME\", set = {{ ... }} }}")
        LinkParams().updated(change["set"], where=f"{cwhere}.set")
        changes.append(LinkChange(str(change["link"]), dict(change["set"])))
    expect = _parse_expect(item.get("expect", {}), f"{where}.expect")
    by_stack = item.get("expect_by_stack", {})
    if not isinstance(by_stack, dict):
        raise SpecError(f"{where}.expect_by_stack: must be a table of stack = {{ expectations }}")
    for name, override in by_stack.items():
        checked = _parse_expect(override, f"{where}.expect_by_stack.{name}")
        if name == stack:
            expect = {**expect, **checked}
    return Phase(item["name"], str(item.get("title", item["name"])), start, seconds, settle,
                 tuple(changes), expect)


def _parse_expect(expect: Any, where: str) -> dict[str, Any]:
    if not isinstance(expect, dict):
        raise SpecError(f"{where}: must be a table")
    for key, value in expect.items():
        if key not in EXPECT_KEYS:
            raise SpecError(f"{where}: unknown key {key!r} (allowed: {', '.join(EXPECT_KEYS)})")
        if key in PATH_TABLES:
            if not isinstance(value, dict) or not all(isinstance(v, (int, float)) for v in value.values()):
                raise SpecError(f"{where}.{key}: must be a table of path = number")
            if key.startswith("share") and not all(0 <= v <= 1 for v in value.values()):
                raise SpecError(f"{where}.{key}: shares are fractions in [0, 1]")
        elif not isinstance(value, (int, float)):
            raise SpecError(f"{where}.{key}: must be a number")
    return dict(expect)


def client_paths(topology: dict[str, Any], client: str = "client") -> dict[str, str]:
    """Client address -> link name, from a result's `topology` description."""
    paths = {}
    for link in topology["links"]:
        for end, address in ((link["a"], link.get("a_address")), (link["b"], link.get("b_address"))):
            if end == client and address:
                paths[address.split("/")[0]] = link["name"]
    return paths


def path_of(local: str, paths: dict[str, str]) -> str:
    """The path a subflow used, from its local ip:port; unknown addresses keep their address."""
    address = local.rsplit(":", 1)[0]
    return paths.get(address, address)


def row_path(row: dict[str, Any], paths: dict[str, str]) -> str:
    """The path of a time-series row: by its local address, or by its remote one when the
    sender is the server (a download: the client's address is the remote end)."""
    local = str(row["local"])
    if local.rsplit(":", 1)[0] in paths or not row.get("remote"):
        return path_of(local, paths)
    return path_of(str(row["remote"]), paths)


@dataclass(frozen=True)
class PhaseSummary:
    phase: Phase
    mbps: dict[str, float]  # mean goodput per path over the phase's check window
    failures: tuple[str, ...]
    median_total_mbps: float | None = None  # median of the window's 1-second totals
    recovery_s: dict[str, float | None] = field(default_factory=dict)  # None: never recovered
    ratios: dict[str, float] = field(default_factory=dict)  # path mean / its first-phase mean

    @property
    def total_mbps(self) -> float:
        return sum(self.mbps.values())

    @property
    def shares(self) -> dict[str, float]:
        total = self.total_mbps
        return {p: (v / total if total > 0 else 0.0) for p, v in self.mbps.items()}

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {"phase": self.phase.name, "window_s": list(self.phase.window),
                "mbps": {p: round(v, 2) for p, v in self.mbps.items()},
                "total_mbps": round(self.total_mbps, 2),
                "median_total_mbps": (None if self.median_total_mbps is None
                                      else round(self.median_total_mbps, 2)),
                "shares": {p: round(v, 3) for p, v in self.shares.items()},
                "recovery_s": self.recovery_s,
                "ratios": {p: round(v, 3) for p, v in self.ratios.items()},
                "expect": self.phase.expect, "passed": self.passed, "failures": list(self.failures)}


def path_mbps(rows: list[dict[str, Any]], paths: dict[str, str], window: tuple[float, float],
              bin_s: float, all_paths: tuple[str, ...] = ()) -> dict[str, float]:
    """Mean Mbit/s per path over [start, end) from binned time-series rows (t_s = bin start)."""
    start, end = window
    totals = dict.fromkeys(all_paths, 0)
    for row in rows:
        t = float(row["t_s"])
        if start - 1e-9 <= t and t + bin_s <= end + 1e-9:
            path = row_path(row, paths)
            totals[path] = totals.get(path, 0) + int(row["bytes"])
    length = end - start
    return {p: (b * 8 / length / 1e6 if length > 0 else 0.0) for p, b in sorted(totals.items())}


def median_total_mbps(rows: list[dict[str, Any]], window: tuple[float, float], bin_s: float,
                      step_s: float = 1.0) -> float:
    """Median over the window's whole `step_s` slices of the total Mbit/s of all subflows."""
    start, end = window
    length = end - start
    if length <= 0:
        return 0.0
    step = min(step_s, length)  # a window shorter than a step is one slice
    slices = int(length / step + 1e-9)  # a partial last slice is left out
    totals = [0] * slices
    for row in rows:
        t = float(row["t_s"])
        index = int((t - start) / step + 1e-9)
        if t >= start - 1e-9 and index < slices and t + bin_s <= start + (index + 1) * step + 1e-9:
            totals[index] += int(row["bytes"])
    return statistics.median(b * 8 / step / 1e6 for b in totals)


def recovery_s(rows: list[dict[str, Any]], paths: dict[str, str], phase: Phase, path: str, target_mbps: float,
               bin_s: float, span_s: float = 1.0) -> float | None:
    """Seconds from the phase start to the end of the first `span_s` slice (sliding by one bin)
    in which the path's mean reaches target_mbps; None if it never does within the phase."""
    count = round(phase.seconds / bin_s)
    per_bin = [0] * count
    for row in rows:
        index = round((float(row["t_s"]) - phase.start_s) / bin_s)
        if 0 <= index < count and row_path(row, paths) == path:
            per_bin[index] += int(row["bytes"])
    width = max(1, round(span_s / bin_s))
    running = sum(per_bin[:width])
    for first in range(count - width + 1):
        if first:
            running += per_bin[first + width - 1] - per_bin[first - 1]
        if running * 8 / (width * bin_s) / 1e6 >= target_mbps:
            return round((first + width) * bin_s, 3)
    return None


def check_phase(phase: Phase, mbps: dict[str, float], median_total: float | None = None,
                recovery: dict[str, float | None] | None = None,
                reference: dict[str, float] | None = None) -> PhaseSummary:
    """Compare a phase's per-path goodput with its expectations; failures say what and by how much.
    `reference` is the first phase's per-path goodput, for the ratio expectations."""
    recovery = dict(recovery or {})
    ratios = {p: (v / reference[p] if reference and reference.get(p, 0.0) > 0 else 0.0)
              for p, v in mbps.items()} if reference is not None else {}
    summary = PhaseSummary(phase, mbps, (), median_total, recovery, ratios)
    total, shares, expect = summary.total_mbps, summary.shares, phase.expect
    failures = []
    if "min_median_total_mbps" in expect:
        if median_total is None:
            failures.append("median total not measured")
        elif median_total < expect["min_median_total_mbps"]:
            failures.append(f"median total {median_total:.1f} < {expect['min_median_total_mbps']} Mbit/s")
    if "min_total_mbps" in expect and total < expect["min_total_mbps"]:
        failures.append(f"total {total:.1f} < {expect['min_total_mbps']} Mbit/s")
    if "max_total_mbps" in expect and total > expect["max_total_mbps"]:
        failures.append(f"total {total:.1f} > {expect['max_total_mbps']} Mbit/s")
    for path, bound in sorted(expect.get("share_min", {}).items()):
        if shares.get(path, 0.0) < bound:
            failures.append(f"share {path} {shares.get(path, 0.0):.2f} < {bound}")
    for path, bound in sorted(expect.get("share_max", {}).items()):
        if shares.get(path, 0.0) > bound:
            failures.append(f"share {path} {shares.get(path, 0.0):.2f} > {bound}")
    for path, bound in sorted(expect.get("min_path_mbps", {}).items()):
        if mbps.get(path, 0.0) < bound:
            failures.append(f"path {path} {mbps.get(path, 0.0):.1f} < {bound} Mbit/s")
    for path, bound in sorted(expect.get("max_recovery_s", {}).items()):
        took = recovery.get(path)
        if took is None:
            failures.append(f"path {path} did not recover to {RECOVERED:.0%} of its final rate")
        elif took > bound:
            failures.append(f"path {path} recovered after {took:.1f} s > {bound} s")
    for path, bound in sorted(expect.get("max_path_ratio", {}).items()):
        if ratios.get(path, 0.0) > bound:
            failures.append(f"path {path} kept {ratios.get(path, 0.0):.2f} of its first-phase rate > {bound}")
    for path, bound in sorted(expect.get("min_path_ratio", {}).items()):
        if ratios.get(path, 0.0) < bound:
            failures.append(f"path {path} kept {ratios.get(path, 0.0):.2f} of its first-phase rate < {bound}")
    return PhaseSummary(phase, mbps, tuple(failures), median_total, recovery, ratios)


def summarize(phases: tuple[Phase, ...] | list[Phase], rows: list[dict[str, Any]], paths: dict[str, str],
              bin_s: float) -> list[PhaseSummary]:
    all_paths = tuple(sorted(set(paths.values())))
    summaries: list[PhaseSummary] = []
    for phase in phases:
        mbps = path_mbps(rows, paths, phase.window, bin_s, all_paths)
        recovery = {path: recovery_s(rows, paths, phase, path, RECOVERED * mbps.get(path, 0.0), bin_s)
                    for path in sorted(phase.expect.get("max_recovery_s", {}))}
        reference = summaries[0].mbps if summaries else mbps
        summaries.append(check_phase(phase, mbps, median_total_mbps(rows, phase.window, bin_s), recovery,
                                     reference))
    return summaries


def format_summary(summaries: list[PhaseSummary]) -> str:
    """The PASS/FAIL table: one row per phase, shares and Mbit/s per path, the verdict and why."""
    paths = sorted({p for s in summaries for p in s.mbps})
    columns = " ".join(f"{'share ' + p:>8} {p + ' Mb/s':>9}" for p in paths)
    header = f"{'phase':<10} {'window s':>11} {columns} {'total':>7} {'median':>7}  {'expected':<34} result"
    lines = [header, "-" * len(header)]
    for s in summaries:
        start, end = s.phase.window
        cells = " ".join(f"{s.shares.get(p, 0.0):>8.2f} {s.mbps.get(p, 0.0):>9.1f}" for p in paths)
        verdict = "PASS" if s.passed else "FAIL: " + "; ".join(s.failures)
        ratio_paths = sorted(set(s.phase.expect.get("max_path_ratio", {}))
                             | set(s.phase.expect.get("min_path_ratio", {})))
        if s.passed and ratio_paths:
            verdict += " (" + ", ".join(f"{p} {s.ratios.get(p, 0.0):.2f}x" for p in ratio_paths) + ")"
        median = "-" if s.median_total_mbps is None else f"{s.median_total_mbps:.1f}"
        lines.append(f"{s.phase.name:<10} {start:>5.1f}-{end:<5.1f} {cells} {s.total_mbps:>7.1f} "
                     f"{median:>7}  {describe_expect(s.phase.expect):<34} {verdict}")
    passed = sum(1 for s in summaries if s.passed)
    lines.append(f"{passed}/{len(summaries)} phases passed: {'PASS' if passed == len(summaries) else 'FAIL'}")
    return "\n".join(lines)


def describe_expect(expect: dict[str, Any]) -> str:
    parts = []
    if "min_total_mbps" in expect:
        parts.append(f"total>={expect['min_total_mbps']}")
    if "min_median_total_mbps" in expect:
        parts.append(f"median>={expect['min_median_total_mbps']}")
    if "max_total_mbps" in expect:
        parts.append(f"total<={expect['max_total_mbps']}")
    for path in sorted(set(expect.get("share_min", {})) | set(expect.get("share_max", {}))):
        low, high = expect.get("share_min", {}).get(path), expect.get("share_max", {}).get(path)
        if low is not None and high is not None:
            parts.append(f"{low}<={path}<={high}")
        elif low is not None:
            parts.append(f"{path}>={low}")
        else:
            parts.append(f"{path}<={high}")
    for path, bound in sorted(expect.get("min_path_mbps", {}).items()):
        parts.append(f"{path}>={bound}Mb/s")
    for path, bound in sorted(expect.get("max_recovery_s", {}).items()):
        parts.append(f"{path} back<={bound}s")
    for path, bound in sorted(expect.get("max_path_ratio", {}).items()):
        parts.append(f"{path}<={bound}x first")
    for path, bound in sorted(expect.get("min_path_ratio", {}).items()):
        parts.append(f"{path}>={bound}x first")
    return ", ".join(parts) or "-"
