"""cwnd.png and rtt.png: drawn when the time series has telemetry, skipped for older runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from testbed.report.command import report_run
from testbed.report.plots import CWND_PNG, RTT_PNG, read_series, render_plot, replot, telemetry_plot_specs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _add_telemetry(run_dir: Path, *, rtt: bool = True) -> None:
    """Give the fixture's timeseries.csv telemetry columns (one RTT bin left empty)."""
    path = run_dir / "timeseries.csv"
    rows = list(csv.DictReader(path.open()))
    for number, row in enumerate(rows):
        row["cwnd_segments"] = str(10 + number)
        row["srtt_ms"] = ("" if number == 1 else f"{20 + number % 3}.500") if rtt else ""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_an_older_run_without_telemetry_gets_no_telemetry_plots(run_dir: Path) -> None:
    result = json.loads((run_dir / "result.json").read_text())
    assert telemetry_plot_specs(result, run_dir) == []
    report_run(run_dir)
    assert not (run_dir / CWND_PNG).exists() and not (run_dir / RTT_PNG).exists()


def test_report_draws_cwnd_and_rtt_per_subflow(run_dir: Path) -> None:
    _add_telemetry(run_dir)
    written = report_run(run_dir)
    assert run_dir / CWND_PNG in written and run_dir / RTT_PNG in written
    cwnd = (run_dir / CWND_PNG).read_bytes()
    assert cwnd.startswith(PNG_MAGIC) and (run_dir / RTT_PNG).read_bytes().startswith(PNG_MAGIC)
    stored = json.loads((run_dir / "plots.json").read_text())["plots"]
    assert [p["kind"] for p in stored] == ["subflow_throughput", "subflow_cwnd", "subflow_rtt"]
    assert stored[2]["y"] == "srtt_ms" and len(stored[2]["labels"]) == 2
    (run_dir / CWND_PNG).unlink()
    assert run_dir / CWND_PNG in replot(run_dir)
    assert (run_dir / CWND_PNG).read_bytes() == cwnd


def test_empty_cells_are_gaps_and_an_all_empty_column_is_not_plotted(run_dir: Path) -> None:
    _add_telemetry(run_dir)
    groups, _labels = read_series(run_dir / "timeseries.csv", "t_s", "srtt_ms", "subflow")
    total_rows = sum(1 for _ in csv.DictReader((run_dir / "timeseries.csv").open()))
    assert sum(len(points) for points in groups.values()) == total_rows - 1
    _add_telemetry(run_dir, rtt=False)
    result = json.loads((run_dir / "result.json").read_text())
    specs = telemetry_plot_specs(result, run_dir)
    assert [s["file"] for s in specs] == [CWND_PNG]
    assert render_plot(specs[0], run_dir).startswith(PNG_MAGIC)
