"""Per-subflow plots (throughput, congestion window, RTT), rendered from a stored plot specification.

Two steps, so a figure is reproducible from files alone: `throughput_plot_spec(result, ...)`
derives a specification from result.json (which series, labels, the timeline events to mark,
phases to shade, axis labels, size) and `render_plot(spec, run_dir)` draws it from the data file
the spec names. `testbed report` writes the specifications into plots.json next to the PNGs, so
re-plotting later (or with another style) starts from exactly what was drawn.

Rendering uses matplotlib's object API with the Agg canvas (no pyplot, no display, no global
state) and strips the PNG's software tag, so the same spec and data give the same bytes.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from testbed.errors import TestbedError
from testbed.net.topo import family_label
from testbed.report.files import write_bytes_atomic, write_text_atomic

PLOTS_FILE = "plots.json"
PLOT_SPEC_SCHEMA = 1
THROUGHPUT_PNG = "throughput.png"
CWND_PNG = "cwnd.png"
RTT_PNG = "rtt.png"
# telemetry plot kinds: kind -> (timeseries column, file, y label, title words)
TELEMETRY_PLOTS: dict[str, tuple[str, str, str, str]] = {
    "subflow_cwnd": ("cwnd_segments", CWND_PNG, "congestion window (segments)", "congestion window"),
    "subflow_rtt": ("srtt_ms", RTT_PNG, "smoothed RTT (ms)", "smoothed RTT"),
}
KINDS = ("subflow_throughput", *TELEMETRY_PLOTS)


def _event_label(applied: dict[str, Any], planned: dict[str, Any] | None) -> str:
    """'a: loss_pct=1.0' from what the spec asked for (the applied entry holds every parameter
    of the link after the change, which would bury the one that changed)."""
    if "middlebox" in applied:
        return f"{applied['middlebox']} {'on' if applied.get('active') else 'off'}"
    changed = (planned or {}).get("set") or applied.get("params") or {}
    words = [f"{k}={v}" for k, v in changed.items() if v is not None]
    up = applied.get("up", (planned or {}).get("up"))
    if up is not None:
        words.append("up" if up else "down")
    return f"{applied.get('link', '?')}: {' '.join(words)}" if words else str(applied.get("link", "?"))


def timeline_events(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Events to mark: the timeline as applied, each labelled by the spec event it carried out."""
    planned = list((result.get("spec") or {}).get("timeline") or [])
    events = []
    for applied in result.get("timeline") or []:
        if "at_s" not in applied:
            continue
        if applied.get("trace") and applied.get("up") is None:
            continue  # a trace's rate changes, ten a second: only its outages are marked
        planned_at = float(applied.get("planned_at_s", -2))
        match = next((p for p in planned if p.get("link") == applied.get("link")
                      and abs(float(p.get("at_s", -1)) - planned_at) < 1e-9), None)
        if match is not None:
            planned.remove(match)
        events.append({"at_s": float(applied["at_s"]), "label": _event_label(applied, match)})
    return events


def throughput_plot_spec(result: dict[str, Any], *, data_file: str | None = None,
                         output: str = THROUGHPUT_PNG, title: str | None = None,
                         phases: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The specification of the per-subflow throughput plot of one run.

    Series come from the connection's subflows (label local -> remote); events are the timeline
    as applied (at_s, link, parameters); phases are optional shaded spans (from_s, to_s, label),
    which a demo passes in to mark its phases.
    """
    series_meta = result.get("timeseries") or {}
    data = data_file or series_meta.get("file") or "timeseries.csv"
    connections = result.get("connections") or []
    labels = _subflow_labels(result)
    events = timeline_events(result)
    outcome = connections[0].get("outcome", "") if connections else ""
    return {
        "kind": "subflow_throughput",
        "file": output,
        "data": data,
        "x": "t_s",
        "y": "mbps",
        "group_by": "subflow",
        "label_from": "local",
        "labels": labels,
        "total": True,
        "title": title or (f"{result.get('name', 'run')}: per-subflow throughput"
                          + (f" ({outcome})" if outcome else "")),
        "xlabel": "time (s)",
        "ylabel": "throughput (Mbit/s)",
        "bin_s": float(series_meta.get("bin_s", 0.1)),
        "events": events,
        "phases": list(phases or []),
        "size_in": [8.0, 4.5],
        "dpi": 100,
    }


def _subflow_labels(result: dict[str, Any]) -> dict[str, str]:
    """Labels keyed by the time series' `local` column: the subflow numbering of the CSV is the
    sampler's, the address pair is what both files agree on."""
    connections = result.get("connections") or []
    if not connections:
        return {}
    return {str(sub.get("local", "?")): f"{sub.get('local', '?')} \u2192 {sub.get('remote', '?')} "
                                        f"({sub.get('family') or family_label(str(sub.get('local', '?')))})"
            for sub in connections[0].get("subflows") or []}


def column_has_values(path: Path, column: str) -> bool:
    """Whether a CSV has `column` with at least one non-empty cell (an older run's series has
    no telemetry; a kernel without a field leaves it empty)."""
    try:
        with path.open(newline="") as handle:
            return any(row.get(column) for row in csv.DictReader(handle))
    except OSError:
        return False


def telemetry_plot_specs(result: dict[str, Any], base: Path, *,
                         data_file: str | None = None) -> list[dict[str, Any]]:
    """Specifications of the per-subflow cwnd and RTT plots, for the columns the run's time
    series has values in (none for a run recorded before the telemetry columns existed)."""
    series_meta = result.get("timeseries") or {}
    data = data_file or series_meta.get("file") or "timeseries.csv"
    specs = []
    for kind, (column, output, ylabel, words) in TELEMETRY_PLOTS.items():
        if not column_has_values(base / data, column):
            continue
        specs.append({
            "kind": kind, "file": output, "data": data, "x": "t_s", "y": column,
            "group_by": "subflow", "label_from": "local", "labels": _subflow_labels(result),
            "total": False, "title": f"{result.get('name', 'run')}: {words} per subflow",
            "xlabel": "time (s)", "ylabel": ylabel, "bin_s": float(series_meta.get("bin_s", 0.1)),
            "events": timeline_events(result), "phases": [], "size_in": [8.0, 4.5], "dpi": 100,
        })
    return specs


def read_series(path: Path, x: str, y: str, group_by: str,
                label_from: str | None = None) -> tuple[dict[str, list[tuple[float, float]]], dict[str, str]]:
    """Points per group from a CSV time series; a missing column or bad number names the file."""
    groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
    labels: dict[str, str] = {}
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in (x, y, group_by) if c not in (reader.fieldnames or [])]
            if missing:
                raise TestbedError(f"{path}: no column {', '.join(missing)} (columns: {reader.fieldnames})")
            for line, row in enumerate(reader, start=2):
                if row.get(y) == "":
                    continue  # no value in this bin (telemetry the source does not have)
                try:
                    groups[row[group_by]].append((float(row[x]), float(row[y])))
                except (TypeError, ValueError) as exc:
                    raise TestbedError(f"{path}:{line}: not a number in {x}/{y}: {exc}") from exc
                if label_from and row.get(label_from):
                    labels.setdefault(row[group_by], row[label_from])
    except OSError as exc:
        raise TestbedError(f"cannot read time series {path}: {exc.strerror or exc}") from exc
    for points in groups.values():
        points.sort()
    return dict(groups), labels


def _sort_key(name: str) -> tuple[int, Any]:
    return (0, int(name)) if name.isdigit() else (1, name)


def render_plot(spec: dict[str, Any], base: Path) -> bytes:
    """PNG bytes of one plot spec, its data file read relative to base."""
    if spec.get("kind") not in KINDS:
        raise TestbedError(f"plot spec {spec.get('file')!r}: unknown kind {spec.get('kind')!r} "
                           f"(known: {', '.join(KINDS)})")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups, label_keys = read_series(base / spec["data"], spec["x"], spec["y"], spec["group_by"],
                                     spec.get("label_from"))
    names = spec.get("labels") or {}
    labels = {group: names.get(key, key) for group, key in label_keys.items()}
    figure = Figure(figsize=tuple(spec.get("size_in", (8.0, 4.5))), dpi=int(spec.get("dpi", 100)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for phase in spec.get("phases") or []:
        axes.axvspan(float(phase["from_s"]), float(phase["to_s"]), alpha=0.08,
                     color=phase.get("colour", "tab:blue"))
        axes.text((float(phase["from_s"]) + float(phase["to_s"])) / 2, 1.0, str(phase.get("label", "")),
                  transform=axes.get_xaxis_transform(), ha="center", va="bottom", fontsize=8)
    totals: dict[float, float] = defaultdict(float)
    for name in sorted(groups, key=_sort_key):
        points = groups[name]
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        for x_value, y_value in points:
            totals[round(x_value, 6)] += y_value
        label = f"subflow {name}: {labels.get(name, '')}".rstrip(": ")
        if spec["kind"] == "subflow_throughput":
            axes.step(xs, ys, where="post", label=label)
        else:
            axes.plot(xs, ys, marker=".", markersize=2, linewidth=1.0, label=label)
    if spec.get("total") and len(groups) > 1:
        xs = sorted(totals)
        axes.step(xs, [totals[x] for x in xs], where="post", color="black", linewidth=1.0,
                  linestyle="--", label="total")
    for event in spec.get("events") or []:
        axes.axvline(float(event["at_s"]), color="tab:red", linestyle=":", linewidth=1.2)
        axes.text(float(event["at_s"]), 0.98, " " + str(event.get("label", "")), rotation=90, va="top",
                  ha="left", fontsize=7, color="tab:red", transform=axes.get_xaxis_transform())
    axes.set_title(str(spec.get("title", "")), fontsize=10)
    axes.set_xlabel(str(spec.get("xlabel", spec["x"])))
    axes.set_ylabel(str(spec.get("ylabel", spec["y"])))
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    if groups:
        axes.legend(loc="lower right", fontsize=7)
    else:
        axes.text(0.5, 0.5, "no samples", transform=axes.transAxes, ha="center")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def write_plots(specs: list[dict[str, Any]], directory: Path) -> list[Path]:
    """Render every spec into directory and store the specs in plots.json beside them."""
    written = []
    for spec in specs:
        target = directory / spec["file"]
        write_bytes_atomic(target, render_plot(spec, directory))
        written.append(target)
    document = {"schema": PLOT_SPEC_SCHEMA, "generator": "testbed.report.plots", "plots": specs}
    write_text_atomic(directory / PLOTS_FILE, json.dumps(document, indent=2) + "\n")
    return written


def replot(directory: Path) -> list[Path]:
    """Render again from a stored plots.json only (nothing re-derived from result.json)."""
    path = directory / PLOTS_FILE
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TestbedError(f"cannot read plot specification {path}: {exc}") from exc
    if document.get("schema") != PLOT_SPEC_SCHEMA:
        raise TestbedError(f"{path}: plot spec schema {document.get('schema')!r}, this testbed reads "
                           f"{PLOT_SPEC_SCHEMA}")
    written = []
    for spec in document.get("plots", []):
        target = directory / spec["file"]
        write_bytes_atomic(target, render_plot(spec, directory))
        written.append(target)
    return written
