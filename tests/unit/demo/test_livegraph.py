"""The live graph as pure functions: following a growing CSV, rates per column, the drawing."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import pytest

from testbed.demo.livegraph import (
    MARKERS,
    OVERLAP,
    PHASE_RULE,
    GaugeHistory,
    LiveGraph,
    RateHistory,
    Sample,
    SampleTail,
    nice_ceiling,
    render_graph,
)
from testbed.demo.phases import Phase
from testbed.demo.prague import parse_show
from testbed.endpoints.sampler import TELEMETRY_COLUMNS
from testbed.errors import SpecError

HEADER = "t_s,subflow,local,remote,bytes_sent,bytes_received,bytes_acked\n"
PATHS = {"10.0.1.1": "a", "10.0.2.1": "b"}
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def constant_samples(mbps: dict[str, float], seconds: float, every_s: float = 0.05) -> list[Sample]:
    """Cumulative samples of subflows running at constant rates (what the endpoints write)."""
    samples = []
    for i in range(1, round(seconds / every_s) + 1):
        t = i * every_s
        for address, rate in mbps.items():
            samples.append(Sample(round(t, 3), f"{address}:5000", round(rate * 1e6 / 8 * t)))
    return samples


def test_sample_tail_returns_only_complete_new_rows(tmp_path: Path) -> None:
    path = tmp_path / "client.samples.csv"
    tail = SampleTail(path)
    assert tail.read_new() == []  # not created yet
    path.write_text(HEADER + "0.05,0,10.0.1.1:1,10.0.100.2:5201,1000,0,900\n"
                    "0.05,1,10.0.2.1:2,x,5,0,4\n0.10,0,10.")
    assert tail.read_new() == [Sample(0.05, "10.0.1.1:1", 900), Sample(0.05, "10.0.2.1:2", 4)]
    with path.open("a") as handle:
        handle.write("0.1.1:1,10.0.100.2:5201,3000,0,2500\n")
    assert tail.read_new() == [Sample(0.1, "10.0.1.1:1", 2500)]
    assert tail.read_new() == []


def test_receiver_side_samples_count_received_bytes(tmp_path: Path) -> None:
    path = tmp_path / "server.samples.csv"
    path.write_text(HEADER + "0.5,0,10.0.100.2:5201,10.0.1.1:1,0,7777,0\n")
    assert SampleTail(path).read_new() == [Sample(0.5, "10.0.100.2:5201", 7777)]


def test_rate_history_recovers_constant_rates_per_path() -> None:
    history = RateHistory(0.5, PATHS)
    history.add(constant_samples({"10.0.1.1": 80.0, "10.0.2.1": 20.0}, 3.0))
    columns = history.complete_columns()
    assert len(columns["a"]) == 6 and len(columns["b"]) == 6
    assert columns["a"] == pytest.approx([80.0] * 6, rel=1e-3)
    assert columns["b"] == pytest.approx([20.0] * 6, rel=1e-3)
    assert history.current() == pytest.approx({"a": 80.0, "b": 20.0}, rel=1e-3)


def test_rate_history_spreads_a_late_sample_over_the_gap() -> None:
    history = RateHistory(0.5, PATHS)
    history.add([Sample(0.5, "10.0.1.1:1", 0), Sample(1.5, "10.0.1.1:1", 12_500_000)])  # 100 Mbit/s for 1 s
    history.add([Sample(2.0, "10.0.1.1:1", 12_500_000)])
    assert history.complete_columns()["a"] == pytest.approx([0.0, 100.0, 100.0, 0.0])


def test_render_puts_each_path_at_its_level_with_phase_rules() -> None:
    phases = [Phase("clean", "clean", 0, 2, 0), Phase("loss", "loss on a", 2, 2, 0)]
    columns = {"a": [100.0, 100.0, 100.0, 100.0, 0.0, 0.0, 0.0, 0.0], "b": [50.0] * 4 + [100.0] * 4}
    lines = render_graph(columns, step_s=0.5, total_s=4, phases=phases, now_s=3.9, height=5, y_max=100,
                         color=False)
    plot = [line[7:] for line in lines[:5]]
    assert all(len(row) == 8 for row in plot)
    assert plot[0][:4] == MARKERS[0] * 4  # a at 100 before the change
    assert plot[2][:4] == MARKERS[1] * 4  # b at 50
    assert plot[0][5:] == MARKERS[1] * 3  # b at 100 after
    assert plot[4][5:] == MARKERS[0] * 3  # a at 0 after
    assert all(row[4] == PHASE_RULE or row[4] in MARKERS for row in plot)  # phase 2 starts at column 4
    assert lines[5].startswith("  Mb/s└") and lines[5][7 + 4] == "┼" and lines[5][7 + 7] == "▲"
    # each name starts at its rule, cut where the next phase begins and at the right edge
    assert lines[6] == "       1:cl2:lo"
    assert "path a    0.0 Mb/s" in lines[7] and "path b  100.0 Mb/s" in lines[7]
    assert "total  100.0" in lines[7]
    assert not any(ANSI.search(line) for line in lines)


def test_render_marks_overlaps_and_colours_on_request() -> None:
    lines = render_graph({"a": [90.0], "b": [90.0]}, step_s=1, total_s=1, height=3, color=False)
    assert OVERLAP in lines[0]
    coloured = render_graph({"a": [90.0], "b": [10.0]}, step_s=1, total_s=1, height=3, color=True)
    assert ANSI.search(coloured[0]) and ANSI.sub("", coloured[0]).endswith(MARKERS[0])


def test_live_graph_redraws_in_place_at_its_refresh_rate(tmp_path: Path) -> None:
    path = tmp_path / "client.samples.csv"
    rows = [f"{t / 20:.2f},0,10.0.1.1:1,x,0,0,{t * 250_000}" for t in range(1, 41)]  # 40 Mbit/s
    path.write_text(HEADER + "\n".join(rows) + "\n")
    stream = io.StringIO()
    graph = LiveGraph(path, PATHS, [Phase("p", "only phase", 0, 10, 0)], 10, stream=stream, width=20,
                      height=4, refresh_s=0.25, color=False)
    assert graph.tick(1.0) and not graph.tick(1.1) and graph.tick(1.3)
    frames = stream.getvalue()
    first, back, second = re.split(r"\x1b\[(\d+)F", frames)
    assert "phase 1/1: only phase" in first and "phase 1/1: only phase" in second
    assert int(back) == len(first.splitlines())  # the second frame moves back over the first
    assert "path a   40.0 Mb/s" in ANSI.sub("", frames)


TELEMETRY_HEADER = HEADER.rstrip("\n") + "," + ",".join(TELEMETRY_COLUMNS) + "\n"


def test_sample_tail_reads_cwnd_and_rtt_and_leaves_missing_ones_none(tmp_path: Path) -> None:
    path = tmp_path / "client.samples.csv"
    path.write_text(TELEMETRY_HEADER + "0.05,0,10.0.1.1:1,x,10,0,9,12,17376,20.500,0,,0\n"
                    "0.05,1,10.0.2.1:2,x,10,0,9,8,11584,,0,,0\n")
    assert SampleTail(path).read_new() == [Sample(0.05, "10.0.1.1:1", 9, 12.0, 20.5),
                                           Sample(0.05, "10.0.2.1:2", 9, 8.0, None)]


def test_gauge_history_keeps_the_last_value_per_column_and_holds_gaps() -> None:
    history = GaugeHistory(0.5, PATHS, "srtt_ms")
    history.add([Sample(0.1, "10.0.1.1:1", 0, 10, 20.0), Sample(0.4, "10.0.1.1:1", 0, 10, 22.0),
                 Sample(1.6, "10.0.1.1:1", 0, 10, 30.0), Sample(1.6, "10.0.2.1:1", 0, 10, None),
                 Sample(2.1, "10.0.2.1:1", 0, 10, 5.0)])
    columns = history.complete_columns()
    assert columns["a"] == [22.0, 22.0, 22.0, 30.0]
    assert len(columns["b"]) == 4 and all(math.isnan(v) for v in columns["b"])  # b's first value is later
    lines = render_graph(columns, step_s=0.5, total_s=2, height=3, y_max=30, color=False, unit="ms",
                         total=False)
    assert lines[0][7:] == "   " + MARKERS[0] and MARKERS[1] not in "".join(lines[:3])
    assert "path b    0.0 ms" in lines[-1] and "total" not in lines[-1]
    assert nice_ceiling(33.0) == 50 and nice_ceiling(0.7) == 1.0 and nice_ceiling(120) == 200


def test_live_graph_shows_cwnd_and_rtt_panels_on_request(tmp_path: Path) -> None:
    path = tmp_path / "client.samples.csv"
    rows = [f"{t / 20:.2f},0,10.0.1.1:1,x,0,0,{t * 250_000},{40 + t},0,{20 + t % 2}.000,0,0,0"
            for t in range(1, 41)]
    path.write_text(TELEMETRY_HEADER + "\n".join(rows) + "\n")
    stream = io.StringIO()
    graph = LiveGraph(path, PATHS, [Phase("p", "only phase", 0, 10, 0)], 10, stream=stream, width=20,
                      height=4, color=False, show=("cwnd", "rtt"))
    assert graph.tick(2.5)
    frame = ANSI.sub("", stream.getvalue())
    assert "congestion window per path (segments)" in frame and "smoothed RTT per path (ms)" in frame
    assert "path a   79.0 seg" in frame and "path a   21.0 ms" in frame  # t=1.95, last complete column
    assert "   seg└" in frame and "    ms└" in frame
    with pytest.raises(ValueError, match="unknown live panel loss"):
        LiveGraph(path, PATHS, [], 10, stream=stream, show=("loss",))


def test_show_needs_known_names_and_live() -> None:
    assert parse_show("cwnd, rtt", live=True) == ("cwnd", "rtt")
    assert parse_show("", live=False) == ()
    with pytest.raises(SpecError, match="unknown panel jitter; use a comma list of cwnd, rtt"):
        parse_show("cwnd,jitter", live=True)
    with pytest.raises(SpecError, match="add --live"):
        parse_show("rtt", live=False)
