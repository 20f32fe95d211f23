"""`testbed stack sim` and `testbed stack bench` as a user runs them: JSON out, one-line
errors with exit status 2 for bad arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.sim import bench, cli


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(("argv", "message"), [
    (["--path", "rate=fast"], "--path 'rate=fast': link parameter rate='fast'"),
    (["--path", "dealy=3"], "unknown link parameter 'dealy'"),
    (["--size", "lots"], "--size: 'lots' is not a byte count"),
    (["--seed", "x"], "--seed: 'x' is not an integer"),
    (["--time-limit", "0"], "--time-limit: must be > 0"),
    (["--cc", "cubic"], "congestion_control: 'cubic' is not one of"),
    (["--strip", "dss:everything"], "parameter 'packets': got 'everything'"),
    (["--strip", "dss:data:both:path9"], "no path 'path9'"),
    (["--middlebox", "path1:teleport"], "unknown middlebox 'teleport'"),
    (["--middlebox", "path1:drop:{nope"], "parameters are not JSON"),
    (["--at", "1:path1:explode"], "action must be cut, restore or set:PARAMS"),
    (["--at", "1:path1:set:rate=-1"], "rate_mbit=-1.0: must be > 0"),
    (["--at", "1:path7:cut"], "no link 'path7'"),
    (["--topology", "moon"], "unknown topology 'moon'"),
    (["--topology", "nat_home"], "the simulator has no NAT router"),
    (["--topology", "two_path", "--path", "rate=1"], "--path and --topology exclude each other"),
    (["--topology", "two_path", "--strip", "dss:data:both:path1"], "no path 'path1'"),
])
def test_bad_arguments_give_one_line_and_exit_2(
        capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("testbed stack sim: error: ")
    assert message in err


def test_unknown_options_also_give_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--bogus"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1 and "--bogus" in err


def test_size_suffixes() -> None:
    assert [cli.parse_size(text) for text in ("1500", "200k", "2M", "1Mi", "3kb")] == [
        1500, 200_000, 2_000_000, 1_048_576, 3000]


def test_bench_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--paths", "0"]) == 2
    assert "--paths: must be >= 1" in capsys.readouterr().err


def test_sim_prints_a_json_summary_with_per_subflow_bytes(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--path", "rate=10,delay=5", "--path", "rate=10,delay=5",
                           "--size", "300k", "--series", "--seed", "4")
    summary = json.loads(out)
    assert code == 0 and summary["hash_ok"] is True and summary["outcome"] == "mptcp"
    assert sum(flow["bytes"] for flow in summary["subflows"]) >= 300_000
    assert {flow["path"] for flow in summary["subflows"]} == {"path1", "path2"}
    assert summary["virtual_duration_s"] > 0 and summary["goodput_mbit"] > 0
    assert set(summary["counters"]["links"]) == {"path1", "path2", "core"}
    assert all(len(series) >= 1 for series in summary["series"].values())


def test_sim_strip_option_reports_the_fallback(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--path", "rate=10,delay=5", "--size", "100k",
                           "--strip", "mp_capable:syn", "--indent", "0")
    summary = json.loads(out)
    assert code == 0 and summary["outcome"] == "fallback-syn"
    boxes = summary["counters"]["links"]["path1"]["middleboxes"]
    assert boxes["strip_options"]["changed"] >= 1


def test_module_entry_point_runs_without_a_traceback_on_bad_input() -> None:
    completed = subprocess.run([sys.executable, "-m", "testbed.sim", "--path", "loss=2"],
                               capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr and "loss must be a fraction" in completed.stderr


def test_sim_runs_over_a_named_topology_and_its_link_names(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--topology", 'two_path:{"rate_mbit": 20, "delay_ms": 5}',
                           "--size", "100k", "--strip", "mp_capable:syn:both:a",
                           "--at", "5:core_b:cut")
    summary = json.loads(out)
    assert code == 0 and summary["hash_ok"] is True and summary["outcome"] == "fallback-syn"
    assert {flow["path"] for flow in summary["subflows"]} == {"a"}
    links = summary["counters"]["links"]
    assert set(links) == {"a", "b", "core_a", "core_b", "server"}
    assert links["a"]["middleboxes"]["strip_options"]["changed"] >= 1


def test_bench_reports_both_sides_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--size", "300k", "--json", "--repeat", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["hash_ok"] is True and report["size"] == 300_000
    for side in ("sender", "receiver"):
        assert report[side]["data_segments"] >= 300_000 // 1460
        assert report[side]["segments_per_second"] > 0
        assert report[side]["stack_segments_per_second"] >= report[side]["segments_per_second"]


def test_sim_writes_one_pcap_per_link(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run_cli(capsys, "--path", "rate=10,delay=5", "--size", "50k",
                           "--pcap", str(tmp_path / "caps"))
    summary = json.loads(out)
    assert code == 0 and set(summary["pcaps"]) == {"path1", "core"}
    for path in summary["pcaps"].values():
        assert Path(path).stat().st_size > 24 + 50_000  # header plus at least the payload
