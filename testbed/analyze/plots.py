"""PNG plots and the HTML page of an analysis, drawn from its CSV files alone.

Four figures, as mptcptrace and its successors drew them: throughput per subflow, the
data-sequence graph (DSN over time, one colour per subflow, data ACKs as a line, reinjections
marked), the CDF of out-of-order delay, and RTT per subflow. `render_all(directory)` redraws
them from analysis.json and the CSVs, so an old analysis can be re-plotted without the capture.
Rendering uses matplotlib's object API on the Agg canvas (no pyplot, no display).
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from testbed.errors import TestbedError
from testbed.report.files import write_bytes_atomic, write_text_atomic
from testbed.report.html import esc, page

THROUGHPUT_PNG = "subflow_throughput.png"
DSN_PNG = "data_sequence.png"
OFO_PNG = "ofo_delay_cdf.png"
RTT_PNG = "subflow_rtt.png"
HTML_FILE = "analysis.html"


def _rows(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))
    except OSError as exc:
        raise TestbedError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _figure(title: str, xlabel: str, ylabel: str) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8.0, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    axes.set_title(title, fontsize=10)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    return figure, axes


def _png(figure: Any, axes: Any, empty: bool) -> bytes:
    if empty:
        axes.text(0.5, 0.5, "no samples", transform=axes.transAxes, ha="center")
    else:
        axes.legend(loc="best", fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _subflow_labels(doc: dict[str, Any]) -> dict[str, str]:
    return {str(s["index"]): f"{s['client']} \u2192 {s['server']}" for s in doc["subflows"]}


def throughput_png(doc: dict[str, Any], directory: Path) -> bytes:
    labels = _subflow_labels(doc)
    groups: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for row in _rows(directory / doc["series"]["subflow"]):
        groups[(row["subflow"], row["sender"])].append((float(row["t_s"]), float(row["goodput_mbps"])))
    figure, axes = _figure("goodput per subflow (from the ACKs)", "time (s)", "goodput (Mbit/s)")
    drawn = 0
    largest = max((sum(y for _, y in points) for points in groups.values()), default=0.0)
    for (subflow, sender), points in sorted(groups.items()):
        if sum(y for _, y in points) <= largest / 100:  # a request, or only ACKs: not drawn
            continue
        points.sort()
        axes.step([p[0] for p in points], [p[1] for p in points], where="post",
                  label=f"subflow {subflow} from {sender} ({labels.get(subflow, '')})")
        drawn += 1
    axes.set_ylim(bottom=0)
    return _png(figure, axes, not drawn)


def rtt_png(doc: dict[str, Any], directory: Path) -> bytes:
    groups: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for row in _rows(directory / doc["series"]["subflow"]):
        if row["rtt_ms"]:
            groups[(row["subflow"], row["sender"])].append((float(row["t_s"]), float(row["rtt_ms"])))
    figure, axes = _figure("RTT per subflow (data/ACK pairs at the capture point)", "time (s)",
                           "RTT (ms)")
    for (subflow, sender), points in sorted(groups.items()):
        points.sort()
        axes.plot([p[0] for p in points], [p[1] for p in points], marker=".", markersize=3,
                  linewidth=0.8, label=f"subflow {subflow}, data from {sender}")
    axes.set_ylim(bottom=0)
    return _png(figure, axes, not groups)


def _main_direction(doc: dict[str, Any]) -> tuple[int, str] | None:
    """The (connection, sender) that carried the most data: the one the DSN graph shows."""
    best = None
    for connection in doc["connections"]:
        for data in connection["data"]:
            if data["bytes"] and (best is None or data["bytes"] > best[0]):
                best = (data["bytes"], connection["index"], data["from"])
    return None if best is None else (best[1], best[2])


def dsn_png(doc: dict[str, Any], directory: Path) -> bytes:
    chosen = _main_direction(doc)
    title = "data-sequence graph"
    if chosen:
        title += f" (connection {chosen[0]}, data from the {chosen[1]})"
    figure, axes = _figure(title, "time (s)", "data sequence number (relative to the IDSN)")
    if chosen is None:
        return _png(figure, axes, True)
    connection, sender = str(chosen[0]), chosen[1]
    labels = _subflow_labels(doc)
    per_subflow: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for row in _rows(directory / doc["series"]["dsn"]):
        if row["connection"] == connection and row["sender"] == sender:
            per_subflow[row["subflow"]].append((float(row["t_s"]), float(row["dsn_low"]),
                                                float(row["dsn_high"])))
    for subflow, points in sorted(per_subflow.items()):
        axes.vlines([p[0] for p in points], [p[1] for p in points], [p[2] for p in points],
                    linewidth=2.0, color=f"C{int(subflow) % 10}",
                    label=f"subflow {subflow} ({labels.get(subflow, '')})")
    acks = sorted((float(r["t_s"]), float(r["data_ack"]))
                  for r in _rows(directory / doc["series"]["data_ack"])
                  if r["connection"] == connection and r["sender"] == sender)
    if acks:
        axes.step([a[0] for a in acks], [a[1] for a in acks], where="post", color="black",
                  linewidth=0.8, label="data ACK")
    reinjected = [(float(r["t_s"]), float(r["dsn"])) for r in _rows(directory / doc["series"]["reinjections"])
                  if r["connection"] == connection and r["sender"] == sender]
    if reinjected:
        axes.scatter([r[0] for r in reinjected], [r[1] for r in reinjected], marker="x",
                     color="tab:red", s=12, label="reinjection", zorder=3)
    return _png(figure, axes, not per_subflow)


def ofo_png(doc: dict[str, Any], directory: Path) -> bytes:
    groups: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for row in _rows(directory / doc["series"]["ofo_cdf"]):
        groups[(row["connection"], row["sender"])].append((float(row["delay_ms"]),
                                                           float(row["fraction_of_bytes"])))
    figure, axes = _figure("out-of-order delay at the capture point (per byte)",
                           "delay until everything before the byte arrived (ms)",
                           "fraction of bytes")
    for (connection, sender), points in sorted(groups.items()):
        points.sort()
        axes.step([p[0] for p in points], [p[1] for p in points], where="post",
                  label=f"connection {connection}, data from the {sender}")
    if groups:
        axes.set_xscale("log")
    axes.set_ylim(0, 1.02)
    return _png(figure, axes, not groups)


PLOTS = ((THROUGHPUT_PNG, throughput_png, "Goodput per subflow"),
         (DSN_PNG, dsn_png, "Data-sequence graph"),
         (OFO_PNG, ofo_png, "Out-of-order delay (CDF)"),
         (RTT_PNG, rtt_png, "RTT per subflow"))


def render_all(directory: Path) -> list[Path]:
    """Draw every PNG and the HTML page from analysis.json and the CSVs in directory."""
    try:
        doc = json.loads((directory / "analysis.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TestbedError(f"cannot read {directory / 'analysis.json'}: {exc}") from exc
    written = []
    for name, draw, _title in PLOTS:
        write_bytes_atomic(directory / name, draw(doc, directory))
        written.append(directory / name)
    write_text_atomic(directory / HTML_FILE, html_page(doc))
    written.append(directory / HTML_FILE)
    return written


def html_page(doc: dict[str, Any]) -> str:
    capture = doc["capture"]
    parts = [f"<p>{esc(capture['file'])}: {esc(capture['format'])}, "
             f"{esc(', '.join(capture['link_types']))}, {capture['packets']} packets, "
             f"{capture['duration_s']:.3f} s</p>"]
    for note in doc["notes"]:
        parts.append(f"<p class=\"note\">{esc(note)}</p>")
    rows = []
    for sub in doc["subflows"]:
        sent = max(sub["directions"], key=lambda d: d["bytes_sent"])
        rows.append("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in (
            sub["index"], sub["connection"], sub["role"], sub["client"], sub["server"],
            sent["from"], sent["bytes_acked"], sent["bytes_retrans"], sent["rtt_ms_mean"],
            sub["ended_by"])) + "</tr>")
    parts.append("<table><tr><th>subflow</th><th>connection</th><th>role</th><th>client</th>"
                 "<th>server</th><th>sender</th><th>bytes acked</th><th>retransmitted</th>"
                 "<th>mean RTT (ms)</th><th>ended by</th></tr>" + "".join(rows) + "</table>")
    for name, _draw, title in PLOTS:
        parts.append(f"<h2>{esc(title)}</h2><p><a href=\"{esc(name)}\"><img src=\"{esc(name)}\" "
                     f"alt=\"{esc(title)}\" width=\"800\"></a></p>")
    events = doc["timeline"][:500]
    parts.append("<h2>MPTCP signals and violations</h2><table><tr><th>t (s)</th><th>connection</th>"
                 "<th>subflow</th><th>from</th><th>signal</th><th>detail</th></tr>"
                 + "".join("<tr>" + "".join(f"<td>{esc(e[k])}</td>" for k in (
                     "t", "connection", "subflow", "from", "signal", "detail")) + "</tr>"
                     for e in events) + "</table>")
    if len(doc["timeline"]) > len(events):
        parts.append(f"<p class=\"note\">{len(doc['timeline']) - len(events)} more events in "
                     "analysis.json</p>")
    links = " ".join(f"<a href=\"{esc(f)}\">{esc(f)}</a>" for f in ["analysis.json", *doc["series"].values()])
    parts.append(f"<p>Data: {links}</p>")
    return page("MPTCP capture analysis", "\n".join(parts))
