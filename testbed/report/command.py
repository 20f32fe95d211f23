"""`testbed report DIR`: re-derive every table and plot from the result files alone.

DIR may be a run directory (result.json + timeseries.csv), a matrix directory (matrix.json +
cells/), or any tree holding run directories. For each run it writes, next to the data:
throughput.png (per-subflow throughput, timeline events marked), plots.json (the plot
specification, so the figure can be redrawn from files), summary.md and summary.html. For a
matrix it re-derives every cell from the cell's result.json (an error cell, having no result,
keeps what matrix.json says) and writes matrix.md and matrix.html again.
`--replot` only redraws from stored plots.json files. Nothing is ever re-run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from testbed.errors import TestbedError
from testbed.report.evidence import WIRE_FILE, load_wire, write_wire
from testbed.report.files import write_text_atomic
from testbed.report.plots import (
    PLOTS_FILE,
    THROUGHPUT_PNG,
    replot,
    telemetry_plot_specs,
    throughput_plot_spec,
    write_plots,
)
from testbed.report.summary import summarize_result
from testbed.report.tables import matrix_html, matrix_markdown, run_html, run_markdown
from testbed.result import RESULT_FILE, read_matrix_document, read_result

MATRIX_FILE = "matrix.json"
SUMMARY_MD = "summary.md"
SUMMARY_HTML = "summary.html"


def report_run(directory: Path) -> list[Path]:
    """Plot, plot spec and summary tables of one run directory; returns the files written."""
    result = read_result(directory)
    summary = summarize_result(result, where=str(directory / RESULT_FILE))
    spec = throughput_plot_spec(result)
    if not (directory / spec["data"]).exists():
        raise TestbedError(f"{directory}: result.json names the time series {spec['data']}, which is missing")
    written = write_plots([spec, *telemetry_plot_specs(result, directory)], directory)
    wire = write_wire(directory, result)
    statements = tuple(wire["statements"]) if wire else ()
    write_text_atomic(directory / SUMMARY_MD, run_markdown(summary, THROUGHPUT_PNG, statements))
    write_text_atomic(directory / SUMMARY_HTML, run_html(summary, THROUGHPUT_PNG, statements))
    extra = [directory / WIRE_FILE] if wire else []
    return [*written, directory / PLOTS_FILE, *extra, directory / SUMMARY_MD, directory / SUMMARY_HTML]


def rederive_matrix(directory: Path) -> dict[str, Any]:
    """matrix.json with every finished cell's numbers re-read from its result file."""
    from testbed.matrix import cell_record_from_result, error_record, summarize_cells

    doc = read_matrix_document(directory / MATRIX_FILE)
    cells = []
    for cell in doc.get("cells", []):
        if cell.get("routed"):  # a proxy or balancer cell: its driver's result is no run result
            cells.append(cell)
            continue
        key = {k: cell[k] for k in ("row", "pairing", "client_stack", "server_stack") if k in cell}
        cell_dir = cell.get("dir")
        result_path = directory / cell_dir / RESULT_FILE if cell_dir else None
        if result_path is not None and result_path.exists():
            result = read_result(result_path)
            wire = load_wire(directory / cell_dir)
            cells.append(cell_record_from_result(key, result, cell.get("expected"), cell_dir, wire))
        elif cell.get("status") == "ok":
            cells.append(error_record(key, f"result file {cell_dir}/{RESULT_FILE} is missing",
                                      cell.get("expected"), cell_dir or ""))
        else:
            cells.append(cell)
    total = (doc.get("summary") or {}).get("cells", len(cells))
    return {**doc, "cells": cells, "summary": summarize_cells(cells, total)}


def _cell_run_dirs(directory: Path) -> list[Path]:
    """Run directories of a matrix's cells: DIR/cells/<row>/<pairing>/ of a local run, and the
    `dir` each cell of matrix.json names (DIR/<host>/cells/... after `testbed remote run`)."""
    found = {p.parent for p in (directory / "cells").glob(f"*/*/{RESULT_FILE}")}
    try:
        listed = json.loads((directory / MATRIX_FILE).read_text()).get("cells", [])
    except (OSError, json.JSONDecodeError, AttributeError):
        listed = []  # rederive_matrix reports an unreadable matrix file
    routed = set()
    for cell in listed:
        cell_dir = cell.get("dir") if isinstance(cell, dict) else None
        if isinstance(cell_dir, str) and cell_dir and (directory / cell_dir / RESULT_FILE).exists():
            (routed if cell.get("routed") else found).add(directory / cell_dir)
    return sorted(found - routed)


def report_matrix(directory: Path, *, cell_reports: bool = True) -> list[Path]:
    # cell reports first: they re-derive each cell's wire.json, which the table then reads
    written: list[Path] = []
    if cell_reports:
        for run_dir in _cell_run_dirs(directory):
            written += report_run(run_dir)
    doc = rederive_matrix(directory)
    links = {}
    for cell in doc["cells"]:
        cell_dir = directory / cell["dir"] if cell.get("dir") else None
        if cell_dir is not None and (cell_dir / RESULT_FILE).exists():
            if cell_reports and not cell.get("routed"):
                links[(cell["row"], cell["pairing"])] = f"{cell['dir']}/{SUMMARY_HTML}"
            else:
                links[(cell["row"], cell["pairing"])] = f"{cell['dir']}/{RESULT_FILE}"
    write_text_atomic(directory / "matrix.md", matrix_markdown(doc))
    write_text_atomic(directory / "matrix.html", matrix_html(doc, links))
    return [*written, directory / "matrix.md", directory / "matrix.html"]


def report_directory(directory: Path, *, cell_reports: bool = True) -> list[Path]:
    if not directory.is_dir():
        raise TestbedError(f"{directory}: not a directory")
    if (directory / MATRIX_FILE).exists():
        return report_matrix(directory, cell_reports=cell_reports)
    if (directory / RESULT_FILE).exists():
        return report_run(directory)
    runs = sorted(p.parent for p in directory.rglob(RESULT_FILE))
    if not runs:
        raise TestbedError(f"{directory}: no {RESULT_FILE} or {MATRIX_FILE} in it or below it")
    written: list[Path] = []
    for run_dir in runs:
        written += report_run(run_dir)
    return written


def replot_directory(directory: Path) -> list[Path]:
    specs = sorted(p.parent for p in directory.rglob(PLOTS_FILE))
    if not specs:
        raise TestbedError(f"{directory}: no {PLOTS_FILE} in it or below it (run `testbed report` first)")
    written: list[Path] = []
    for plot_dir in specs:
        written += replot(plot_dir)
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="a run directory, a matrix directory, or a tree of run directories")
    parser.add_argument("--replot", action="store_true", help="only redraw PNGs from the stored plots.json")
    parser.add_argument("--no-cell-reports", action="store_true",
                        help="for a matrix, only its tables (no plot and summary per cell)")


def run(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    if args.replot:
        written = replot_directory(directory)
    else:
        written = report_directory(directory, cell_reports=not args.no_cell_reports)
    for path in written:
        print(path)
    print(f"{len(written)} files written from the result files in {directory}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m` entry: the `testbed report` command, through the one CLI error handler."""
    from testbed.cli import main as cli_main

    return cli_main(["report", *(sys.argv[1:] if argv is None else argv)])
