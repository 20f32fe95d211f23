"""The Prague demo and a simult_flows case for real: namespaces, kernel MPTCP, live link changes."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from testbed.demo import prague, simult
from testbed.net.congestion import route_algorithm, set_route_congestion_control

if os.geteuid() != 0:
    pytest.skip("demo integration tests need root (namespaces, tc, nft)", allow_module_level=True)

pytestmark = [pytest.mark.root]


def test_route_congctl_is_set_and_read_back(tmp_path: Path) -> None:
    name = f"tbdemo{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "add", "v0", "type", "veth", "peer", "name", "v1"],
                       check=True)
        subprocess.run(["ip", "-n", name, "addr", "add", "10.9.0.1/24", "dev", "v0"], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "v0", "up"], check=True)
        subprocess.run(["ip", "-n", name, "route", "add", "default", "via", "10.9.0.2", "table", "100"],
                       check=True)
        assert set_route_congestion_control(name, "cubic") == 2  # the connected route and table 100's default
        from pyroute2 import IPRoute

        with IPRoute(netns=name) as ipr:
            unicast = [r for r in ipr.route("dump", family=socket.AF_INET) if r["type"] == 1
                       and r.get_attr("RTA_TABLE") != 255]
            assert [route_algorithm(r) for r in unicast] == ["cubic", "cubic"]
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.mark.slow
def test_short_prague_writes_files_and_a_pass_fail_table(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "prague"
    parser = argparse.ArgumentParser()
    prague.add_arguments(parser)
    code = prague.run(parser.parse_args(["--out", str(out), "--phase-seconds", "3", "--live"]))
    printed = capsys.readouterr().out
    for name in ("result.json", "timeseries.csv", "prague.json", "prague.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "prague.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((out / "prague.json").read_text())
    assert [s["phase"] for s in record["summary"]] == ["clean", "loss-a", "loss-ab", "rtt-a"]
    assert code == (0 if record["passed"] else 1)
    table = printed[printed.index("outcome:"):printed.index("files:")]
    assert all(f"{name} " in table for name in ("clean", "loss-a", "loss-ab", "rtt-a"))
    assert "phases passed: PASS" in table or "phases passed: FAIL" in table
    assert "Mb/s└" in printed  # the live graph was drawn
    clean, loss_a = record["summary"][0], record["summary"][1]
    assert clean["total_mbps"] > 120 and min(clean["shares"].values()) > 0.25  # both paths carry traffic
    assert loss_a["shares"]["b"] > clean["shares"]["b"]  # 1% loss on a moves traffic to b
    result = json.loads((out / "result.json").read_text())
    assert result["environment"]["tcp_congestion_control"] == {"client": "cubic", "server": "cubic"}
    assert [e["planned_at_s"] for e in result["timeline"]] == [3.0, 6.0, 9.0, 9.0]

    # the table and the plot are re-derived from the files alone
    (out / "prague.png").unlink()
    code_again = prague.run(parser.parse_args(["--out", str(out), "--replot"]))
    assert code_again == code and (out / "prague.png").exists()
    replotted = capsys.readouterr().out
    assert replotted[replotted.index("outcome:"):replotted.index("files:")] == table


@pytest.mark.slow
def test_one_simult_flows_case_finishes_within_its_limit(tmp_path: Path) -> None:
    plan = simult.load_plan(simult.DEFAULT_SPEC)
    rows = simult.run_plan(plan, ["kernel"], tmp_path, cases=["unbalanced-delay-1-25"], say=lambda _m: None)
    assert len(rows) == 1
    row = rows[0]
    assert row["outcome"] == "mptcp" and all(b > 0 for b in row["subflow_bytes"])
    assert row["passed"], row
    assert row["duration_s"] <= row["limit_s"]
    assert json.loads((tmp_path / "simult.json").read_text())["rows"][0]["case"] == "unbalanced-delay-1-25"
