"""PNG plot of per-path throughput over time with phases marked, from result files alone.

Uses matplotlib's Agg backend (no display). The plot is derived from timeseries.csv and the
phase description stored next to it (prague.json), so `testbed demo prague --replot DIR`
redraws it without re-running anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.demo.phases import PhaseSummary, row_path
from testbed.report.files import save_figure


def smoothed_series(rows: list[dict[str, Any]], paths: dict[str, str], bin_s: float,
                    smooth_s: float) -> dict[str, tuple[list[float], list[float]]]:
    """Per-path (times, Mbit/s) averaged over `smooth_s` windows (bins of `bin_s`)."""
    per_bin: dict[str, dict[int, int]] = {}
    last_bin = 0
    for row in rows:
        index = int(float(row["t_s"]) / bin_s + 1e-6)
        last_bin = max(last_bin, index)
        path = row_path(row, paths)
        bins = per_bin.setdefault(path, {})
        bins[index] = bins.get(index, 0) + int(row["bytes"])
    group = max(1, round(smooth_s / bin_s))
    out = {}
    for path, bins in sorted(per_bin.items()):
        times, values = [], []
        for start in range(0, last_bin + 1, group):
            total = sum(bins.get(i, 0) for i in range(start, start + group))
            times.append((start + group / 2) * bin_s)
            values.append(total * 8 / (group * bin_s) / 1e6)
        out[path] = (times, values)
    return out


@dataclass(frozen=True)
class CausePanel:
    """What the lower panel of a head-of-line plot shows (testbed.demo.hol): the receiver's
    data-level backlog and advertised window per bin, and one path's retransmissions."""

    rows: list[dict[str, Any]]
    retransmissions: list[tuple[float, int]]  # (bin start, segments) on `lossy_path`
    lossy_path: str


def write_phase_plot(png: Path, rows: list[dict[str, Any]], paths: dict[str, str], bin_s: float,
                     summaries: Sequence[PhaseSummary], title: str, smooth_s: float = 0.5,
                     cause: CausePanel | None = None) -> None:
    """Lines per path and their total; shaded check windows, phase names, PASS/FAIL per phase;
    with `cause`, a second panel below on the same time axis."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    series = smoothed_series(rows, paths, bin_s, smooth_s)
    if cause is None:
        figure, axes = pyplot.subplots(figsize=(11, 5), dpi=110)
    else:
        figure, (axes, lower) = pyplot.subplots(2, 1, figsize=(11, 8), dpi=110, sharex=True,
                                                gridspec_kw={"height_ratios": [3, 2]})
    try:
        total_t: list[float] = []
        total_v: list[float] = []
        for path, (times, values) in series.items():
            axes.plot(times, values, label=f"path {path}", linewidth=1.6)
            if not total_t:
                total_t, total_v = list(times), [0.0] * len(times)
            for i, v in enumerate(values[: len(total_v)]):
                total_v[i] += v
        if total_t:
            axes.plot(total_t, total_v, label="total", color="0.35", linewidth=1.0, linestyle="--")
        top = max([*total_v, 1.0]) * 1.12
        for number, summary in enumerate(summaries, start=1):
            phase = summary.phase
            if phase.start_s > 0:
                axes.axvline(phase.start_s, color="0.2", linewidth=0.8)
            start, end = phase.window
            axes.axvspan(start, end, color="tab:green" if summary.passed else "tab:red", alpha=0.07)
            shares = " ".join(f"{p}={v:.2f}" for p, v in summary.shares.items())
            axes.text(phase.start_s + 0.3, top * 0.97, f"{number}. {phase.title}", fontsize=8, va="top")
            axes.text(phase.start_s + 0.3, top * 0.90, f"{'PASS' if summary.passed else 'FAIL'} {shares}",
                      fontsize=8, va="top", color="tab:green" if summary.passed else "tab:red")
        axes.set_ylim(0, top)
        axes.set_xlabel("time since the transfer started (s)")
        axes.set_ylabel(f"goodput (Mbit/s, {smooth_s:.1f} s mean)")
        axes.set_title(title)
        axes.legend(loc="lower left", fontsize=8)
        axes.grid(alpha=0.3)
        if cause is not None:
            _draw_cause(lower, cause, summaries)
        figure.tight_layout()
        save_figure(figure, png)
    finally:
        pyplot.close(figure)


def _draw_cause(axes: Any, cause: CausePanel, summaries: Sequence[PhaseSummary]) -> None:
    """Backlog and advertised window (KiB) over time; a tick per bin with retransmissions on
    the lossy path, its height the number of segments."""
    times = [float(r["t_s"]) for r in cause.rows]
    backlog = [int(r["max_backlog_bytes"]) / 1024 for r in cause.rows]
    window = [None if r["min_window_bytes"] in ("", None) else int(r["min_window_bytes"]) / 1024
              for r in cause.rows]
    axes.fill_between(times, backlog, step="post", color="tab:red", alpha=0.35,
                      label="receiver's out-of-order backlog (data level, max per bin)")
    axes.step(times, [w if w is not None else float("nan") for w in window], where="post",
              color="tab:blue", linewidth=1.0, label="advertised window (min per bin)")
    axes.set_ylabel("KiB")
    axes.set_xlabel("time since the transfer started (s)")
    axes.grid(alpha=0.3)
    for summary in summaries:
        if summary.phase.start_s > 0:
            axes.axvline(summary.phase.start_s, color="0.2", linewidth=0.8)
    rtos = [float(r["t_s"]) for r in cause.rows
            if cause.lossy_path in str(r.get("rto_paths") or "").split(";")]
    if rtos:
        top = max([*backlog, *(w for w in window if w is not None), 1.0])
        axes.plot(rtos, [top * 1.04] * len(rtos), linestyle="none", marker="v", color="tab:red",
                  markersize=6,
                  label=f"RTO-like on path {cause.lossy_path}: a segment again after >= 200 ms of silence")
    if cause.retransmissions:
        marks = axes.twinx()
        marks.vlines([t for t, _ in cause.retransmissions], 0, [n for _, n in cause.retransmissions],
                     color="black", linewidth=1.2, label=f"retransmissions on path {cause.lossy_path}")
        marks.set_ylabel(f"segments retransmitted on {cause.lossy_path} per bin")
        marks.set_ylim(0, max(n for _, n in cause.retransmissions) * 3)
        marks.legend(loc="upper right", fontsize=8)
    axes.legend(loc="upper left", fontsize=8)
