"""Trace files (Mahimahi, CSV) read, checked and played as timeline changes; the spec's
[[traces]] and [expect].trace_share; the shipped generated traces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from testbed.errors import SpecError
from testbed.net.traces import (
    HOLD_QUEUE_PKTS,
    HOLD_RATE_MBIT,
    parse_csv,
    parse_mahimahi,
    play,
    read_trace,
)
from testbed.spec import parse_spec
from testbed.trace_share import check_trace_share, link_windows, window_shares

ROOT = Path(__file__).resolve().parents[3]


def mahimahi(rates_per_100ms: list[int]) -> str:
    """A Mahimahi trace with the given number of opportunities in each 100 ms bin."""
    stamps = []
    for index, count in enumerate(rates_per_100ms):
        stamps += [index * 100 + 1 + i * 99 // max(count, 1) for i in range(count)]
    stamps.append(len(rates_per_100ms) * 100)  # the period
    return "\n".join(map(str, stamps)) + "\n"


def test_mahimahi_opportunities_become_a_rate_per_bin() -> None:
    trace = parse_mahimahi(mahimahi([10, 0, 25]), "t.up")
    # 10 packets of 1500 bytes in 100 ms = 1.2 Mbit/s; the period's own line counts in the last bin
    assert [p.rate_mbit for p in trace.points] == [1.2, 0.0, 3.12]
    assert [p.at_s for p in trace.points] == [0.0, 0.1, 0.2]
    assert trace.period_s == 0.3
    assert trace.rate_at(0.35) == 1.2  # repeats


def test_mahimahi_bin_width_is_a_parameter() -> None:
    trace = parse_mahimahi(mahimahi([10, 10, 10, 10]), "t.up", bin_ms=200)
    assert [p.rate_mbit for p in trace.points] == [1.2, 1.26]


@pytest.mark.parametrize("text, message", [
    ("1\n2\nx\n", "t.up:3: 'x' is not an integer"),
    ("5\n3\n", "t.up:2: timestamp 3 goes back in time"),
    ("-1\n", "t.up:1: timestamp -1 is negative"),
    ("", "t.up: empty trace"),
    ("0\n0\n", "the last timestamp is the trace's period and must be > 0"),
])
def test_bad_mahimahi_names_file_and_line(text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        parse_mahimahi(text, "t.up")


def test_csv_rows_with_empty_fields_leave_parameters_unchanged() -> None:
    trace = parse_csv("# c\ntime_s,rate_mbit,delay_ms,loss_pct\n0,10,20,\n1.5,,30,1\n3,0\n", "t.csv")
    assert [(p.at_s, p.rate_mbit, p.delay_ms, p.loss_pct) for p in trace.points] == [
        (0.0, 10.0, 20.0, None), (1.5, None, 30.0, 1.0), (3.0, 0.0, None, None)]
    assert trace.period_s is None


@pytest.mark.parametrize("text, message", [
    ("0,10\n0,5\n", "t.csv:2: time_s 0 is not after"),
    ("0,ten\n", "t.csv:1: rate_mbit 'ten' is not a number"),
    ("0,1,2,3,4\n", "t.csv:1: expected time_s,rate_mbit,delay_ms,loss_pct"),
    (",5\n", "t.csv:1: expected"),
    ("0,-1\n", "t.csv:1: rate_mbit must be a finite number >= 0"),
    ("0,1,1,150\n", "t.csv:1: loss_pct 150 is above 100"),
    ("0,inf\n", "t.csv:1: rate_mbit must be a finite number"),
    ("# nothing\n", "t.csv: no rows"),
])
def test_bad_csv_names_file_and_line(text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_csv(text, "t.csv")


def test_read_trace_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such trace file"):
        read_trace(tmp_path / "missing.csv")
    binary = tmp_path / "b.up"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SpecError, match="not a text file"):
        read_trace(binary)
    with pytest.raises(SpecError, match="unknown trace format"):
        read_trace(binary, format="pcap")
    with pytest.raises(SpecError, match="not a regular file"):
        read_trace(Path("/dev/zero"))
    with pytest.raises(SpecError, match="not a regular file"):
        read_trace(tmp_path)


def test_play_keeps_only_changes_and_takes_the_link_down_for_rate_zero() -> None:
    trace = parse_csv("0,10\n1,10\n2,0\n3,0,5\n4,10\n", "t.csv")
    changes = [(c.at_s, c.set, c.up) for c in play(trace, until_s=10)]
    assert changes == [(0.0, {"rate_mbit": 10.0}, None), (2.0, {}, False),
                       (3.0, {"delay_ms": 5.0}, None), (4.0, {}, True)]


def test_play_hold_outage_keeps_a_tiny_rate_and_repeats_a_mahimahi_trace() -> None:
    trace = parse_mahimahi(mahimahi([10, 0, 9]), "t.up")  # + the period's line: 10 in the last bin
    changes = [(c.at_s, c.set, c.up) for c in play(trace, until_s=0.5)]
    hold = {"rate_mbit": HOLD_RATE_MBIT, "queue_pkts": HOLD_QUEUE_PKTS}
    assert changes == [(0.0, {"rate_mbit": 1.2}, None), (0.1, hold, None),
                       (0.2, {"rate_mbit": 1.2, "queue_pkts": None}, None), (0.4, hold, None)]
    down = play(trace, until_s=0.25, outage="down")
    assert [(c.at_s, c.up) for c in down] == [(0.0, None), (0.1, False), (0.2, True)]


def test_play_time_scale_and_start() -> None:
    trace = parse_csv("0,10\n10,20\n", "t.csv")
    assert [c.at_s for c in play(trace, until_s=100, start_s=2, time_scale=0.5)] == [2.0, 7.0]
    assert play(trace, until_s=5, start_s=2, time_scale=0.5)[-1].at_s == 2.0


def spec_with(traces: str, expect: str = "", seconds: int = 30) -> dict:
    from testbed.spec import tomllib

    return tomllib.loads(f"""
[topology]
name = "handover"
[[endpoints]]
role = "server"
stack = "kernel"
[[endpoints]]
role = "client"
stack = "kernel"
[traffic]
seconds = {seconds}
{traces}
[expect]
{expect}
""")


def test_spec_traces_become_timeline_events(tmp_path: Path) -> None:
    (tmp_path / "w.csv").write_text("0,30\n5,0\n8,25\n")
    spec = parse_spec(spec_with('[[traces]]\nlink = "wifi"\nfile = "w.csv"\ntime_scale = 2'),
                      source=str(tmp_path / "s.toml"))
    wifi = [(e.at_s, e.set, e.up) for e in spec.timeline]
    assert wifi == [(0.0, {"rate_mbit": 30.0}, None), (10.0, {}, False), (16.0, {"rate_mbit": 25.0}, True)]
    assert spec.traces[0].time_scale == 2
    assert {e.trace for e in spec.timeline} == {"w.csv"}


@pytest.mark.parametrize("traces, message", [
    ('[[traces]]\nlink = "wifi"', "missing required key 'file'"),
    ('[[traces]]\nlink = "wifi"\nfile = "w.csv"\nspeed = 2', "unknown key 'speed'"),
    ('[[traces]]\nlink = "wifi"\nfile = "w.csv"\noutage = "maybe"', "outage: 'maybe' is not one of"),
    ('[[traces]]\nlink = "wifi"\nfile = "w.csv"\ntime_scale = 0', "time_scale 0.001..1000"),
    ('[[traces]]\nlink = "wifi"\nfile = "nope.csv"', "nope.csv: no such trace file"),
    ('[[traces]]\nlink = "wifi"\nfile = "bad.csv"', "bad.csv:2: rate_mbit 'x' is not a number"),
    ('[[traces]]\nlink = "wifi"\nfile = "w.csv"\n[[traces]]\nlink = "wifi"\nfile = "w.csv"',
     "already follows a trace"),
])
def test_spec_trace_errors(tmp_path: Path, traces: str, message: str) -> None:
    (tmp_path / "w.csv").write_text("0,30\n")
    (tmp_path / "bad.csv").write_text("0,30\n1,x\n")
    with pytest.raises(SpecError, match=message):
        parse_spec(spec_with(traces), source=str(tmp_path / "s.toml"))


def test_spec_trace_share_is_validated(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="inside_min: a share"):
        parse_spec(spec_with("", 'trace_share = { link = "wifi", inside_min = 2 }'), source="s.toml")
    with pytest.raises(SpecError, match="unknown key 'inside'"):
        parse_spec(spec_with("", 'trace_share = { link = "wifi", inside = 2 }'), source="s.toml")
    with pytest.raises(SpecError, match="missing required key 'link'"):
        parse_spec(spec_with("", "trace_share = { inside_min = 0.5 }"), source="s.toml")


def test_trace_share_per_window() -> None:
    timeline = [{"at_s": 0, "link": "wifi", "set": {"rate_mbit": 30}, "up": None},
                {"at_s": 2, "link": "wifi", "set": {}, "up": False},
                {"at_s": 5, "link": "wifi", "set": {}, "up": True}]
    windows = link_windows(timeline, "wifi", 7)
    assert windows == [(0.0, 2.0, True), (2.0, 5.0, False), (5.0, 7.0, True)]
    rows = []
    for i in range(70):
        t = i / 10
        wifi = 1000 if (t < 2 or t >= 5.5) else 0
        rows.append({"t_s": t, "local": "10.0.100.2:5201", "remote": "10.0.1.1:4000", "bytes": wifi})
        rows.append({"t_s": t, "local": "10.0.100.2:5201", "remote": "10.0.2.1:4001", "bytes": 500})
    shares = window_shares(rows, {"10.0.1.1"}, windows, margin_s=0.5, bin_s=0.1)
    assert [round(s.share, 2) for s in shares] == [0.67, 0.0, 0.67]
    assert check_trace_share({"link": "wifi", "inside_min": 0.6, "outside_max": 0.05}, shares) == []
    failures = check_trace_share({"link": "wifi", "inside_min": 0.7}, shares)
    assert failures == ["wifi up 0-2 s: 67% of bytes on wifi < 70%",
                        "wifi up 5-7 s: 67% of bytes on wifi < 70%"]
    stalled = window_shares([r for r in rows if r["t_s"] < 2], {"10.0.1.1"}, windows, 0.5, 0.1)
    assert "no byte delivered" in check_trace_share({"link": "wifi"}, stalled)[0]


def test_shipped_traces_are_what_the_generator_makes(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_traces.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    for name in ("stop_and_go.up", "subway_cellular.csv", "subway_wifi.csv"):
        assert (tmp_path / name).read_text() == (ROOT / "traces" / name).read_text(), name


def test_shipped_traces_have_the_promised_shape() -> None:
    cellular = read_trace(ROOT / "traces" / "subway_cellular.csv")
    rates = [p.rate_mbit for p in cellular.points]
    assert min(rates) == 2.0 and max(rates) == 20.0
    wifi = read_trace(ROOT / "traces" / "subway_wifi.csv")
    windows = link_windows([{"at_s": c.at_s, "link": "wifi", "up": c.up} for c in play(wifi, until_s=270)],
                           "wifi", 270)
    assert windows == [(0.0, 20.0, True), (20.0, 90.0, False), (90.0, 110.0, True), (110.0, 180.0, False),
                       (180.0, 200.0, True), (200.0, 270.0, False)]
    stop_and_go = read_trace(ROOT / "traces" / "stop_and_go.up")
    assert stop_and_go.period_s == 60
    zero_bins = sum(1 for p in stop_and_go.points if p.rate_mbit == 0)
    assert 60 <= zero_bins <= 200  # 3..5 stops of 2..4 s a minute
    assert max(p.rate_mbit for p in stop_and_go.points) <= 16.2


@pytest.mark.parametrize("name", ["subway.toml", "subway_python.toml", "subway_short.toml",
                                  "subway_short_python.toml", "stop_and_go.toml"])
def test_scenario_specs_load(name: str) -> None:
    from testbed.spec import load_spec

    spec = load_spec(ROOT / "experiments" / "scenarios" / name)
    assert spec.traces and spec.timeline
