"""Every shipped topology carries a real kernel MPTCP transfer, and a timeline changes links while
traffic flows (rate, loss, delay through the userspace stage, a link flap)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.foundation.conftest import RUN_ID, leftovers, run_cli


def run_spec(tmp_path: Path, text: str) -> tuple[dict, str]:
    spec = tmp_path / "spec.toml"
    spec.write_text(text)
    done = run_cli("run", str(spec), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stdout + done.stderr
    run_id = RUN_ID.search(done.stdout).group(1)
    assert leftovers(run_id) == []
    return json.loads((tmp_path / "out" / "result.json").read_text()), done.stdout


ENDPOINTS = """
[[endpoints]]
role = "server"
stack = "kernel"
[[endpoints]]
role = "client"
stack = "kernel"
"""


def test_n_path_uses_every_path(tmp_path: Path) -> None:
    result, _ = run_spec(tmp_path, f"""
[topology]
name = "n_path"
[topology.params]
n = 3
rate_mbit = 30
{ENDPOINTS}
[traffic]
seconds = 3
[mptcp]
subflows = 3
""")
    (conn,) = result["connections"]
    assert conn["integrity"] == "ok" and conn["outcome"] == "mptcp"
    carrying = {s["local"].split(":")[0] for s in conn["subflows"] if s["bytes"] > 1_000_000}
    assert carrying == {"10.0.1.1", "10.0.2.1", "10.0.3.1"}
    assert conn["goodput_mbps"] > 60  # three 30 Mbit/s paths


def test_nat_home_subflow_crosses_the_kernel_nat(tmp_path: Path) -> None:
    result, _ = run_spec(tmp_path, f"""
[topology]
name = "nat_home"
{ENDPOINTS}
[traffic]
seconds = 2
""")
    (conn,) = result["connections"]
    assert conn["integrity"] == "ok" and conn["mptcp"]
    # the client sees its private address; the path through the NAT still carries data
    client_side = {s["local"].split(":")[0]: s["bytes"] for s in conn["subflows"]}
    assert client_side.get("192.168.1.1", 0) > 0 and client_side.get("10.0.2.1", 0) > 0


def test_timeline_changes_links_live_and_handover_survives_a_flap(tmp_path: Path) -> None:
    result, stdout = run_spec(tmp_path, f"""
[topology]
name = "handover"
{ENDPOINTS}
[traffic]
seconds = 5
[[timeline]]
at_s = 1.0
link = "wifi"
set = {{ rate_mbit = 20, loss_pct = 0.5, delay_ms = 15 }}
[[timeline]]
at_s = 2.0
link = "wifi"
up = false
[[timeline]]
at_s = 3.5
link = "wifi"
up = true
""")
    (conn,) = result["connections"]
    assert conn["integrity"] == "ok" and conn["bytes"] > 0
    applied = result["timeline"]
    assert [e["link"] for e in applied] == ["wifi"] * 3
    assert applied[0]["params"]["rate_mbit"] == 20 and applied[0]["params"]["delay_ms"] == 15
    assert applied[1]["up"] is False and applied[2]["up"] is True
    for entry, planned in zip(applied, (1.0, 2.0, 3.5), strict=True):
        assert abs(entry["at_s"] - planned) < 0.2
    # the kernel reports the rate the change asked for, on both ends of the link
    wifi_classes = [c["rate_mbit"] for t in result["shaping"]["wifi"] for c in t["classes"]]
    assert wifi_classes == [20.0, 20.0]
    # the userspace delay stage took the new delay
    stage = result["middlebox_stats"]["mb_wifi"]
    for direction in ("upstream", "downstream"):
        assert stage[direction]["delay"]["delay_ms"] == 15
    assert "link wifi" in stdout
