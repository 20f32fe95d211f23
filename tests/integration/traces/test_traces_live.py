"""Traces played on real namespaces: the shaped rate follows the trace (goodput measured per
window against the trace's rate, CSV and Mahimahi, a "hold" outage), a bad trace file is a
one-line error, and the compressed subway ride passes for both stacks."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from tests.integration.foundation.conftest import RUN_ID, leftovers, run_cli

if os.geteuid() != 0:
    pytest.skip("trace integration tests need root (namespaces, tc, nft)", allow_module_level=True)

SPEC = """
name = "trace"
[topology]
name = "two_path"
[topology.params]
path_a = {{ rate_mbit = 50, delay_ms = 5 }}
path_b = {{ rate_mbit = 50, delay_ms = 5 }}
[[traces]]
link = "a"
file = "{trace}"
[[endpoints]]
role = "server"
stack = "tcp"
[[endpoints]]
role = "client"
stack = "tcp"
[traffic]
seconds = {seconds}
"""


def run_trace(tmp_path: Path, trace: Path, seconds: float) -> tuple[dict, list[dict]]:
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(trace=trace, seconds=seconds))
    done = run_cli("run", str(spec), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert leftovers(RUN_ID.search(done.stdout).group(1)) == []
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    with (tmp_path / "out" / "timeseries.csv").open() as handle:
        return result, list(csv.DictReader(handle))


def goodput(rows: list[dict], start_s: float, end_s: float) -> float:
    """Mbit/s of every subflow's bytes in the bins inside [start_s, end_s)."""
    picked = [r for r in rows if start_s <= float(r["t_s"]) and float(r["t_s"]) + 0.1 <= end_s + 1e-6]
    return sum(int(r["bytes"]) for r in picked) * 8 / (end_s - start_s) / 1e6


def check_follows(rows: list[dict], windows: list[tuple[float, float, float]]) -> list[str]:
    """Goodput in each window is 80..102 % of the trace's rate (the rate counts IP headers)."""
    wrong = []
    for start, end, rate in windows:
        measured = goodput(rows, start, end)
        if not 0.8 * rate <= measured <= 1.02 * rate:
            wrong.append(f"{start}-{end} s: {measured:.2f} Mbit/s against the trace's {rate}")
    return wrong


def test_rate_follows_a_csv_trace(tmp_path: Path) -> None:
    trace = tmp_path / "steps.csv"
    trace.write_text("time_s,rate_mbit,delay_ms,loss_pct\n0,20\n2,5\n4,12\n")
    result, rows = run_trace(tmp_path, trace, 6)
    applied = [(e["planned_at_s"], e.get("params", {}).get("rate_mbit")) for e in result["timeline"]]
    assert applied == [(0.0, 20.0), (2.0, 5.0), (4.0, 12.0)]
    assert {e["trace"] for e in result["timeline"]} == {str(trace)}
    for entry in result["timeline"]:
        assert abs(entry["at_s"] - entry["planned_at_s"]) < 0.1
    # half a second after each change for the queue to drain or fill
    assert check_follows(rows, [(0.5, 2.0, 20), (2.5, 4.0, 5), (4.5, 6.0, 12)]) == []


def test_rate_follows_a_mahimahi_trace_and_holds_in_its_gaps(tmp_path: Path) -> None:
    # 1 s of 16.2 Mbit/s (135 opportunities every 100 ms) then 1 s without any (but the
    # period's own line at 2000 ms), repeating
    stamps = [k * 100 + i * 100 // 135 for k in range(10) for i in range(135)] + [2000]
    trace = tmp_path / "gap.up"
    trace.write_text("\n".join(map(str, stamps)) + "\n")
    result, rows = run_trace(tmp_path, trace, 5)
    rates = [e["params"]["rate_mbit"] for e in result["timeline"]]
    assert rates[:4] == [16.2, 0.1, 0.12, 16.2]
    assert [e["params"]["queue_pkts"] for e in result["timeline"][:4]] == [None, 1000, None, None]
    assert check_follows(rows, [(0.4, 1.0, 16.2), (2.5, 3.0, 16.2), (4.5, 5.0, 16.2)]) == []
    for start in (1.2, 3.2):  # the gap: packets wait in the queue, next to nothing gets through
        assert goodput(rows, start, start + 0.8) < 0.5
    assert result["connections"][0]["integrity"] == "ok"


def test_a_bad_trace_file_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text("0,10\n1,fast\n")
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(trace=trace, seconds=2))
    done = run_cli("run", str(spec), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"testbed: {trace}:2: rate_mbit 'fast' is not a number"]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("stack", ["kernel", "python"])
def test_subway_ride_moves_to_wifi_at_every_station(tmp_path: Path, stack: str) -> None:
    done = run_cli("subway", "--short", "--stack", stack, "--out", str(tmp_path), timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    result = json.loads((tmp_path / stack / "result.json").read_text())
    windows = result["expectations"]["trace_share"]
    assert [w["up"] for w in windows] == [True, False, True, False, True]
    assert all(w["share"] >= 0.5 for w in windows if w["up"])
    assert all(w["share"] <= 0.05 and w["total_bytes"] > 0 for w in windows if not w["up"])
    (conn,) = result["connections"]
    assert conn["outcome"] == "mptcp" and conn["integrity"] == "ok"
    assert "| PASS |" in (tmp_path / "subway.md").read_text()
    assert (tmp_path / "subway.png").stat().st_size > 10_000
