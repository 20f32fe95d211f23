"""A live per-subflow throughput graph in the terminal: plain ANSI and Unicode, no curses.

Three parts, so the drawing is testable without a terminal or a network:
- `SampleTail` follows the endpoint's growing samples CSV (cumulative per-subflow bytes) and
  returns only the complete rows added since the last call;
- `RateHistory` turns cumulative bytes into Mbit/s per path in fixed time columns (pure);
- `GaugeHistory` holds per-subflow telemetry (cwnd, smoothed RTT) per path in the same
  columns (pure), for the extra panels of `--show cwnd,rtt`;
- `render_graph` draws a history as lines of text (pure); `LiveGraph` puts it on a terminal.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from testbed.demo.phases import Phase, path_of

MARKERS = ("●", "■", "▲", "◆")
OVERLAP = "◉"
COLORS = ("\x1b[36m", "\x1b[33m", "\x1b[35m", "\x1b[32m")  # cyan, yellow, magenta, green
RESET = "\x1b[0m"
PHASE_RULE = "┊"


# --show names -> (samples CSV column, Sample attribute, panel title, axis unit)
GAUGES: dict[str, tuple[str, str, str, str]] = {
    "cwnd": ("cwnd_segments", "cwnd", "congestion window per path (segments)", "seg"),
    "rtt": ("srtt_ms", "srtt_ms", "smoothed RTT per path (ms)", "ms"),
}


@dataclass(frozen=True)
class Sample:
    t_s: float
    local: str
    bytes: int  # cumulative goodput of this subflow: bytes acked (sender) or received
    cwnd: float | None = None  # segments; None when the CSV has no value
    srtt_ms: float | None = None


def _optional(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


class SampleTail:
    """Reads rows appended to a samples CSV since the last call; a half-written last line waits."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._columns: list[str] | None = None
        self._pending = ""

    def read_new(self) -> list[Sample]:
        try:
            with self.path.open("r", newline="") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
                self._offset = handle.tell()
        except FileNotFoundError:
            return []
        text = self._pending + chunk
        complete, _sep, self._pending = text.rpartition("\n")
        if not complete:
            self._pending = text
            return []
        return self.parse_lines(complete.split("\n"))

    def parse_lines(self, lines: list[str]) -> list[Sample]:
        samples = []
        for fields in csv.reader(io.StringIO("\n".join(lines))):
            if not fields:
                continue
            if self._columns is None:
                self._columns = fields
                continue
            row = dict(zip(self._columns, fields, strict=False))
            try:
                acked = int(row.get("bytes_acked") or 0)
                received = int(row.get("bytes_received") or 0)
                samples.append(Sample(float(row["t_s"]), row["local"], max(acked, received),
                                      _optional(row.get("cwnd_segments")), _optional(row.get("srtt_ms"))))
            except (KeyError, ValueError):
                continue  # a torn row cannot happen after rpartition, but never crash the display
        return samples


@dataclass
class RateHistory:
    """Mbit/s per path in columns of `step_s` seconds, from cumulative per-subflow samples."""

    step_s: float
    paths: dict[str, str]  # client address -> path name
    columns: dict[str, list[float]] = field(default_factory=dict)
    _last: dict[str, tuple[float, int]] = field(default_factory=dict)  # subflow -> (t, bytes)
    latest_t: float = 0.0

    def add(self, samples: Sequence[Sample]) -> None:
        """Spread each increase of a subflow's counter evenly over the time since its last sample."""
        for sample in sorted(samples, key=lambda s: s.t_s):
            path = path_of(sample.local, self.paths)
            column = self.columns.setdefault(path, [])
            t0, b0 = self._last.get(sample.local, (sample.t_s, 0))  # a new subflow: all in its column
            delta = max(0, sample.bytes - b0)
            self._last[sample.local] = (sample.t_s, sample.bytes)
            self.latest_t = max(self.latest_t, sample.t_s)
            self._spread(column, t0, sample.t_s, delta)

    def _spread(self, column: list[float], t0: float, t1: float, delta: int) -> None:
        if t1 <= t0:
            index = int(t1 / self.step_s)
            self._grow(column, index)
            column[index] += delta * 8 / self.step_s / 1e6
            return
        rate = delta / (t1 - t0)
        t = t0
        while t < t1 - 1e-12:
            index = int(t / self.step_s + 1e-9)
            edge = min(t1, (index + 1) * self.step_s)
            self._grow(column, index)
            column[index] += rate * (edge - t) * 8 / self.step_s / 1e6
            t = edge

    @staticmethod
    def _grow(column: list[float], index: int) -> None:
        if len(column) <= index:
            column.extend([0.0] * (index + 1 - len(column)))

    def complete_columns(self) -> dict[str, list[float]]:
        """Columns that are over (the one still filling would show a false dip)."""
        done = int(self.latest_t / self.step_s + 1e-9)
        return {p: c[:done] for p, c in sorted(self.columns.items())}

    def current(self, span: int = 2) -> dict[str, float]:
        """Mean Mbit/s per path over the last `span` complete columns."""
        out = {}
        for path, column in self.complete_columns().items():
            tail = column[-span:]
            out[path] = sum(tail) / len(tail) if tail else 0.0
        return out


@dataclass
class GaugeHistory:
    """One telemetry value per path in columns of `step_s` seconds: the last sample in each
    column; a column without a sample holds the previous value (the value did not change as
    far as anyone knows), and columns before a path's first value are NaN, which
    `render_graph` leaves blank. With several subflows on one path, the last one sampled wins."""

    step_s: float
    paths: dict[str, str]
    attribute: str  # a Sample field: "cwnd" or "srtt_ms"
    columns: dict[str, list[float]] = field(default_factory=dict)
    latest_t: float = 0.0

    def add(self, samples: Sequence[Sample]) -> None:
        for sample in sorted(samples, key=lambda s: s.t_s):
            self.latest_t = max(self.latest_t, sample.t_s)
            value = getattr(sample, self.attribute)
            if value is None:
                continue
            column = self.columns.setdefault(path_of(sample.local, self.paths), [])
            index = int(sample.t_s / self.step_s + 1e-9)
            if len(column) <= index:  # held from the last value; NaN (not drawn) before the first
                column.extend([column[-1] if column else math.nan] * (index + 1 - len(column)))
            column[index] = value

    def complete_columns(self) -> dict[str, list[float]]:
        done = int(self.latest_t / self.step_s + 1e-9)
        out = {}
        for path, column in sorted(self.columns.items()):
            held = column[:done]
            if held and len(held) < done:
                held = held + [held[-1]] * (done - len(held))
            out[path] = held
        return out


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above value (an axis top)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= value)


def render_graph(columns: dict[str, list[float]], *, step_s: float, total_s: float,
                 phases: Sequence[Phase] = (), now_s: float = 0.0, height: int = 12, y_max: float = 100.0,
                 color: bool = True, title: str = "", status: str = "", unit: str = "Mb/s",
                 total: bool = True) -> list[str]:
    """Draw per-path throughput over time; one text column per `step_s` seconds of `total_s`.

    Each path has its own marker (and colour); a cell two paths share shows OVERLAP. Phase
    starts are dotted vertical rules with the phase names on the axis line below.
    """
    width = max(1, round(total_s / step_s))
    paths = sorted(columns)
    grid = [[" "] * width for _ in range(height)]
    owners: list[list[set[int]]] = [[set() for _ in range(width)] for _ in range(height)]
    rule_columns = {min(width - 1, int(p.start_s / step_s + 1e-9)) for p in phases if p.start_s > 0}
    for col in rule_columns:
        for row in range(height):
            grid[row][col] = PHASE_RULE
    for number, path in enumerate(paths):
        for col, value in enumerate(columns[path][:width]):
            if math.isnan(value):
                continue
            level = min(height - 1, max(0, round(value / y_max * (height - 1))))
            row = height - 1 - level
            owners[row][col].add(number)
    for row in range(height):
        for col in range(width):
            who = owners[row][col]
            if len(who) > 1:
                grid[row][col] = OVERLAP
            elif who:
                number = next(iter(who))
                marker = MARKERS[number % len(MARKERS)]
                grid[row][col] = f"{COLORS[number % len(COLORS)]}{marker}{RESET}" if color else marker
    lines = [title] if title else []
    for row in range(height):
        level_value = (height - 1 - row) / (height - 1) * y_max if height > 1 else y_max
        label = f"{level_value:5.0f} ┤" if row % 3 == 0 or row == height - 1 else "      │"
        lines.append(label + "".join(grid[row]))
    axis = ["─"] * width
    for col in rule_columns:
        axis[col] = "┼"
    now_col = min(width - 1, int(now_s / step_s))
    if 0 <= now_col < width:
        axis[now_col] = "▲"
    lines.append(f"{unit:>6}└" + "".join(axis))
    names = [" "] * width
    for number, phase in enumerate(phases, start=1):
        col = min(width - 1, int(phase.start_s / step_s + 1e-9))
        label = f"{number}:{phase.name}"
        for i, ch in enumerate(label[: max(0, width - col)]):
            names[col + i] = ch
    lines.append("       " + "".join(names))
    legend = []
    for number, path in enumerate(paths):
        marker = MARKERS[number % len(MARKERS)]
        if color:
            marker = f"{COLORS[number % len(COLORS)]}{marker}{RESET}"
        values = columns[path]
        last = values[-1] if values and not math.isnan(values[-1]) else 0.0
        legend.append(f"{marker} path {path} {last:6.1f} {unit}")
    total_now = sum(columns[p][-1] for p in paths if columns[p] and not math.isnan(columns[p][-1]))
    clock = f"t={now_s:5.1f}/{total_s:.0f} s"
    summed = f"   total {total_now:6.1f} {unit}" if total else ""
    lines.append("       " + "   ".join(legend) + f"{summed}   {clock}")
    if status:
        lines.append("       " + status)
    return lines


class LiveGraph:
    """Redraws a graph in place on a terminal: the cursor goes back up over the previous frame."""

    def __init__(self, samples_path: Path, paths: dict[str, str], phases: Sequence[Phase], total_s: float,
                 *, stream: TextIO | None = None, width: int = 80, height: int = 12, y_max: float = 100.0,
                 refresh_s: float = 0.25, color: bool = True, title: str = "",
                 show: Sequence[str] = ()) -> None:
        self.tail = SampleTail(samples_path)
        self.step_s = max(0.25, total_s / width)
        self.history = RateHistory(self.step_s, paths)
        unknown = [name for name in show if name not in GAUGES]
        if unknown:
            raise ValueError(f"unknown live panel {', '.join(unknown)} (known: {', '.join(GAUGES)})")
        self.gauges = {name: GaugeHistory(self.step_s, paths, GAUGES[name][1]) for name in show}
        self.phases, self.total_s = list(phases), total_s
        self.stream = stream if stream is not None else sys.stdout  # the one current at start
        self.height, self.y_max = height, y_max
        self.refresh_s, self.color, self.title = refresh_s, color, title
        self.status = ""
        self._drawn_lines = 0
        self._last_draw = -1e9

    def tick(self, now_s: float) -> bool:
        """Read new samples and redraw if refresh_s has passed; returns whether it drew."""
        if now_s - self._last_draw < self.refresh_s:
            return False
        self._last_draw = now_s
        samples = self.tail.read_new()
        self.history.add(samples)
        for gauge in self.gauges.values():
            gauge.add(samples)
        phase = next((p for p in reversed(self.phases) if p.start_s <= now_s), None)
        parts = [f"phase {self.phases.index(phase) + 1}/{len(self.phases)}: {phase.title}"] if phase else []
        status = "   ".join([*parts, self.status] if self.status else parts)
        lines = render_graph(self.history.complete_columns(), step_s=self.step_s, total_s=self.total_s,
                             phases=self.phases, now_s=now_s, height=self.height, y_max=self.y_max,
                             color=self.color, title=self.title, status=status)
        for name, gauge in self.gauges.items():
            columns = gauge.complete_columns()
            top = nice_ceiling(max((v for c in columns.values() for v in c if not math.isnan(v)),
                                   default=0.0) * 1.1)
            _column, _attribute, panel_title, unit = GAUGES[name]
            lines += render_graph(columns, step_s=self.step_s, total_s=self.total_s, phases=self.phases,
                                  now_s=now_s, height=max(4, self.height // 2), y_max=top, color=self.color,
                                  title=panel_title, unit=unit, total=False)
        out = []
        if self._drawn_lines:
            out.append(f"\x1b[{self._drawn_lines}F")
        out.extend(line + "\x1b[K" for line in lines)
        self.stream.write("\n".join(out) + "\n")
        self.stream.flush()
        self._drawn_lines = len(lines)
        return True
