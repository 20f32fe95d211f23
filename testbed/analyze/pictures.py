"""The pictures every `testbed run` (and so `make demo`) leaves next to result.json.

throughput.png, cwnd.png, rtt.png and plots.json as `testbed report` draws them (per-subflow
throughput and telemetry from timeseries.csv), and, when the run captured packets, the
capture's analysis in analysis/ with its data-sequence graph copied beside result.json as data_sequence.png.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from testbed.errors import TestbedError
from testbed.report.files import WriteFailed
from testbed.report.plots import THROUGHPUT_PNG, telemetry_plot_specs, throughput_plot_spec, write_plots

CAPTURE_FILE = "capture.pcap"
ANALYSIS_DIR = "analysis"


def write_run_pictures(out_dir: Path, result: dict[str, Any]) -> list[Path]:
    """Draw the run's pictures; returns the files written. TestbedError when one fails."""
    written = []
    spec = throughput_plot_spec(result)
    if (out_dir / spec["data"]).exists():
        written += write_plots([spec, *telemetry_plot_specs(result, out_dir)], out_dir)
    capture = out_dir / CAPTURE_FILE
    if capture.exists():
        from testbed.analyze.command import analyse_capture
        from testbed.analyze.output import write_outputs
        from testbed.analyze.plots import DSN_PNG, render_all

        analysis, reader, notes = analyse_capture(capture, progress=False)
        target = out_dir / ANALYSIS_DIR
        write_outputs(analysis, reader, target, notes)
        written += render_all(target)
        try:
            shutil.copyfile(target / DSN_PNG, out_dir / DSN_PNG)
        except OSError as exc:
            raise WriteFailed(f"could not write {out_dir / DSN_PNG}: {exc.strerror or exc}") from exc
        written.append(out_dir / DSN_PNG)
    return written


def pictures_or_warning(out_dir: Path, result: dict[str, Any]) -> tuple[list[Path], str | None]:
    """write_run_pictures, with a failure turned into a one-line message (the run itself and
    its result.json stand; the caller decides the exit code)."""
    try:
        return write_run_pictures(out_dir, result), None
    except TestbedError as exc:
        return [], f"pictures not written: {exc.message}"


__all__ = ["THROUGHPUT_PNG", "pictures_or_warning", "write_run_pictures"]
