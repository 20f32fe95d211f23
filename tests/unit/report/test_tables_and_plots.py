"""Every table and plot rendered from the stored fixture result files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from testbed import errors
from testbed.report.files import WriteFailed, write_text_atomic
from testbed.report.plots import (
    PLOTS_FILE,
    read_series,
    render_plot,
    replot,
    throughput_plot_spec,
    write_plots,
)
from testbed.report.summary import summarize_result
from testbed.report.tables import matrix_html, matrix_markdown, run_html, run_markdown

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_summary_shares_and_rates_come_from_the_result(run_dir: Path) -> None:
    result = load(run_dir / "result.json")
    summary = summarize_result(result)
    (conn,) = summary.connections
    subflow_bytes = [s["bytes"] for s in result["connections"][0]["subflows"]]
    assert [s.bytes for s in conn.subflows] == subflow_bytes
    assert sum(s.share for s in conn.subflows) == pytest.approx(1.0)
    assert conn.carrying == 2 and conn.outcome == "mptcp"
    assert conn.subflows[0].mbps == pytest.approx(subflow_bytes[0] * 8 / conn.duration_s / 1e6)


def test_summary_of_a_file_that_is_no_result_names_what_is_missing() -> None:
    with pytest.raises(errors.TestbedError, match="connections"):
        summarize_result({"schema": 1}, where="x/result.json")


def test_run_markdown_and_html(run_dir: Path, rejected_dir: Path) -> None:
    summary = summarize_result(load(run_dir / "result.json"))
    md = run_markdown(summary, "throughput.png")
    conn = summary.connections[0]
    assert f"| kernel \u2192 kernel | mptcp | {conn.goodput_mbps:.2f} |" in md
    shares = [float(m) for m in re.findall(r"\| (\d+\.\d)% \|", md)]
    assert len(shares) == 2 and sum(shares) == pytest.approx(100.0, abs=0.11)
    assert "t=0.503 s link a" in md and "![per-subflow throughput](throughput.png)" in md
    html = run_html(summary, "throughput.png")
    assert html.startswith("<!DOCTYPE html>") and "<img src=\"throughput.png\"" in html
    assert "class=\"outcome-mptcp\"" in html
    rejected = run_markdown(summarize_result(load(rejected_dir / "result.json")))
    assert "| subflow-rejected |" in rejected and "PASS" in rejected


def test_matrix_markdown_marks_differing_and_error_cells(matrix_dir: Path) -> None:
    doc = load(matrix_dir / "matrix.json")
    md = matrix_markdown(doc)
    header = next(line for line in md.splitlines() if line.startswith("| Middlebox"))
    assert header == "| Middlebox | kernel \u2192 kernel | python \u2192 kernel |"
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| Middlebox")]
    assert len(rows) == 2
    none_row, join_row = rows
    assert "mptcp" in none_row.split("|")[2] and "\u2717" not in none_row.split("|")[2]
    assert "**\u2717 error: endpoint python client crashed" in none_row.split("|")[3]
    assert "(expected mptcp)" in none_row
    assert "subflow-rejected" in join_row.split("|")[2]
    assert "**\u2717 fallback-syn" in join_row.split("|")[3] and "(expected subflow-rejected)" in join_row
    assert "4 cells: 2 as expected, 2 differ" in md


def test_matrix_html_frames_exactly_the_differing_cells(matrix_dir: Path) -> None:
    doc = load(matrix_dir / "matrix.json")
    html = matrix_html(doc, {("none", "kernel-kernel"): "cells/none/kernel-kernel/summary.html"})
    assert len(re.findall(r'<td class="[^"]*\bdiffers\b', html)) == 2
    assert '<td class="cell outcome-error differs"' in html
    assert 'href="cells/none/kernel-kernel/summary.html"' in html
    assert html.count("<tr>") == 3  # header + two rows
    # below the table, every cell's evidence, folded; the error cell says why it failed
    assert html.count("<details>") == 4
    assert "<li>error: endpoint python client crashed: RuntimeError: example</li>" in html


def test_matrix_html_escapes_what_comes_from_files(matrix_dir: Path) -> None:
    doc = load(matrix_dir / "matrix.json")
    doc["rows"][0]["label"] = "<script>alert(1)</script>"
    doc["cells"][0]["outcome"] = "\"><b>"
    html = matrix_html(doc)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "outcome-unknown" in html


def test_partial_matrix_says_so_and_shows_cells_not_run(matrix_dir: Path) -> None:
    doc = load(matrix_dir / "matrix.json")
    doc["cells"] = doc["cells"][:1]
    doc["partial"], doc["interrupted"] = True, True
    doc["summary"] = {"cells": 4, "run": 1, "as_expected": 1, "differ": 0, "errors": 0, "no_expectation": 0,
                      "not_run": 3}
    md = matrix_markdown(doc)
    assert "PARTIAL: interrupted" in md and md.count("not run") >= 3


def test_plot_spec_carries_series_labels_and_timeline_events(run_dir: Path) -> None:
    spec = throughput_plot_spec(load(run_dir / "result.json"))
    assert spec["data"] == "timeseries.csv" and spec["kind"] == "subflow_throughput"
    assert spec["events"] == [{"at_s": 0.503, "label": "a: loss_pct=1.0"}]
    assert len(spec["labels"]) == 2 and all("\u2192 10.0.100.2:5201" in v for v in spec["labels"].values())
    groups, label_keys = read_series(run_dir / "timeseries.csv", "t_s", "mbps", "subflow", "local")
    assert set(groups) == {"0", "1"} and set(label_keys.values()) == set(spec["labels"])


def test_render_is_a_png_and_reproducible_from_the_stored_spec(run_dir: Path) -> None:
    spec = throughput_plot_spec(load(run_dir / "result.json"))
    first = render_plot(spec, run_dir)
    assert first.startswith(PNG_MAGIC) and len(first) > 10_000
    assert render_plot(spec, run_dir) == first  # no timestamp or version inside
    write_plots([spec], run_dir)
    stored = load(run_dir / PLOTS_FILE)
    assert stored["plots"] == [spec]
    (run_dir / "throughput.png").unlink()
    assert replot(run_dir) == [run_dir / "throughput.png"]
    assert (run_dir / "throughput.png").read_bytes() == first
    with_phases = render_plot({**spec, "phases": [{"from_s": 0.0, "to_s": 0.5, "label": "clean"}]}, run_dir)
    assert with_phases != first


def test_render_errors_name_the_problem(run_dir: Path) -> None:
    spec = throughput_plot_spec(load(run_dir / "result.json"))
    with pytest.raises(errors.TestbedError, match="unknown kind"):
        render_plot({**spec, "kind": "pie"}, run_dir)
    with pytest.raises(errors.TestbedError, match="no column"):
        render_plot({**spec, "y": "gbps"}, run_dir)
    (run_dir / "timeseries.csv").write_text("t_s,subflow,local,remote,bytes,mbps\nx,0,a,b,1,2\n")
    with pytest.raises(errors.TestbedError, match=r"timeseries.csv:2: not a number"):
        render_plot(spec, run_dir)
    with pytest.raises(errors.TestbedError, match="cannot read time series"):
        render_plot({**spec, "data": "missing.csv"}, run_dir)


def test_an_empty_series_still_plots(run_dir: Path) -> None:
    (run_dir / "timeseries.csv").write_text("t_s,subflow,local,remote,bytes,mbps\n")
    spec = throughput_plot_spec(load(run_dir / "result.json"))
    assert render_plot(spec, run_dir).startswith(PNG_MAGIC)


def test_a_failed_write_is_an_error(tmp_path: Path, run_dir: Path) -> None:
    with pytest.raises(WriteFailed, match="could not write"):
        write_text_atomic(tmp_path / "no-such-dir" / "x.md", "x")
    blocker = tmp_path / "file"
    blocker.write_text("")
    spec = throughput_plot_spec(load(run_dir / "result.json"))
    with pytest.raises(WriteFailed):
        write_plots([{**spec, "file": "../file/throughput.png"}], run_dir)
    assert WriteFailed("x").exit_code == 4


def test_each_subflow_is_labelled_with_its_family(run_dir: Path) -> None:
    """A dual-stack connection: the family follows each subflow into tables and plot legends
    (from `family`, or from the address in results written before the field)."""
    result = load(run_dir / "result.json")
    first, second = result["connections"][0]["subflows"][:2]
    second["local"], second["remote"] = "[fd00:10:0:2::1]:40000", "[fd00:10:0:100::2]:5201"
    second["family"] = "IPv6"
    first.pop("family", None)
    summary = summarize_result(result)
    assert [s.family for s in summary.connections[0].subflows[:2]] == ["IPv4", "IPv6"]
    md = run_markdown(summary)
    assert "| [fd00:10:0:2::1]:40000 \u2192 [fd00:10:0:100::2]:5201 (IPv6) |" in md
    assert f"| {first['local']} \u2192 {first['remote']} (IPv4) |" in md
    assert "(IPv6)</td>" in run_html(summary)
    labels = throughput_plot_spec(result)["labels"]
    assert labels["[fd00:10:0:2::1]:40000"].endswith("(IPv6)")
    assert labels[first["local"]].endswith("(IPv4)")


def test_a_smaller_outcome_only_transfer_marks_its_goodput(matrix_dir: Path) -> None:
    doc = load(matrix_dir / "matrix.json")
    plain = matrix_markdown(doc)
    assert "(smaller transfer)" not in plain
    cell = next(c for c in doc["cells"] if isinstance(c.get("goodput_mbps"), (int, float)))
    cell["outcome_only"] = {"bytes": 2_000_000}
    md, html = matrix_markdown(doc), matrix_html(doc)
    assert f"{cell['goodput_mbps']:.1f} Mbit/s (smaller transfer)" in md
    assert "ran the spec's smaller [outcome_only] transfer" in md and "(smaller transfer)" in html
    cell["outcome_only"] = {"timeout_s": 10.0}  # a shorter wait leaves the transfer as it was
    assert "(smaller transfer)" not in matrix_markdown(doc)
