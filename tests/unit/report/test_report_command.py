"""`testbed report DIR`: every table and plot re-derived from the result files alone."""

from __future__ import annotations

import json
from pathlib import Path

from testbed.report.command import main, rederive_matrix

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_report_of_a_run_directory(run_dir: Path, capsys) -> None:
    assert main([str(run_dir)]) == 0
    for name in ("throughput.png", "plots.json", "summary.md", "summary.html"):
        assert (run_dir / name).exists(), name
    assert (run_dir / "throughput.png").read_bytes().startswith(PNG_MAGIC)
    plots = json.loads((run_dir / "plots.json").read_text())
    assert plots["plots"][0]["events"][0]["label"] == "a: loss_pct=1.0"
    assert "throughput.png" in capsys.readouterr().out


def test_report_of_a_tree_of_runs(run_dir: Path, rejected_dir: Path) -> None:
    assert main([str(run_dir.parent)]) == 0
    assert (run_dir / "summary.md").exists() and (rejected_dir / "summary.md").exists()


def test_matrix_tables_come_from_the_cells_result_files(matrix_dir: Path) -> None:
    # edit a cell's result file: the re-derived table must follow the file, not matrix.json
    cell_result = matrix_dir / "cells/none/kernel-kernel/result.json"
    result = json.loads(cell_result.read_text())
    result["connections"][0]["outcome"] = "stalled"
    result["connections"][0]["goodput_mbps"] = 12.5
    cell_result.write_text(json.dumps(result))
    assert main([str(matrix_dir)]) == 0
    md = (matrix_dir / "matrix.md").read_text()
    assert "**\u2717 stalled 12.5 Mbit/s" in md and "(expected mptcp)" in md
    assert "3 differ" in md
    html = (matrix_dir / "matrix.html").read_text()
    assert 'href="cells/none/kernel-kernel/summary.html"' in html
    assert (matrix_dir / "cells/strip_mp_join/python-kernel/throughput.png").exists()
    # matrix.json itself is the record of the run and stays as it was
    assert json.loads((matrix_dir / "matrix.json").read_text())["cells"][0]["outcome"] == "mptcp"


def test_a_finished_cell_without_its_result_file_becomes_an_error(matrix_dir: Path) -> None:
    (matrix_dir / "cells/strip_mp_join/kernel-kernel/result.json").unlink()
    doc = rederive_matrix(matrix_dir)
    cell = next(c for c in doc["cells"] if (c["row"], c["pairing"]) == ("strip_mp_join", "kernel-kernel"))
    assert cell["status"] == "error" and "missing" in cell["error"]
    error_cell = next(c for c in doc["cells"] if (c["row"], c["pairing"]) == ("none", "python-kernel"))
    assert error_cell["error"].startswith("endpoint python client crashed")  # kept from matrix.json


def test_replot_redraws_from_the_stored_spec_only(run_dir: Path) -> None:
    assert main([str(run_dir)]) == 0
    first = (run_dir / "throughput.png").read_bytes()
    (run_dir / "result.json").unlink()  # not needed to redraw
    (run_dir / "throughput.png").unlink()
    assert main([str(run_dir), "--replot"]) == 0
    assert (run_dir / "throughput.png").read_bytes() == first


def test_errors(tmp_path: Path, run_dir: Path, capsys) -> None:
    assert main([str(tmp_path / "nope")]) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 1
    assert "no result.json or matrix.json" in capsys.readouterr().err
    assert main([str(empty), "--replot"]) == 1
    (run_dir / "timeseries.csv").unlink()
    assert main([str(run_dir)]) == 1
    assert "timeseries.csv, which is missing" in capsys.readouterr().err


def test_cells_of_a_merged_remote_matrix_are_found_where_matrix_json_says(matrix_dir: Path) -> None:
    # `testbed remote run` keeps each host's files in DIR/<host>/cells/... and names that dir
    host_dir = matrix_dir / "lab1"
    host_dir.mkdir()
    (matrix_dir / "cells").rename(host_dir / "cells")
    doc = json.loads((matrix_dir / "matrix.json").read_text())
    for cell in doc["cells"]:
        if cell.get("dir"):
            cell["dir"] = f"lab1/{cell['dir']}"
            cell["host"] = "lab1"
    (matrix_dir / "matrix.json").write_text(json.dumps(doc))
    assert main([str(matrix_dir)]) == 0
    assert (host_dir / "cells/strip_mp_join/python-kernel/throughput.png").exists()
    assert 'href="lab1/cells/none/kernel-kernel/summary.html"' in (matrix_dir / "matrix.html").read_text()
