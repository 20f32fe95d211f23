"""The netem path, for real: boot the Debian kernel with `testbed vm run` and measure inside.

One boot (~30 s under TCG, plus ~1-2 min of measurement) proves: the VM starts, the project and
its .venv work inside at the same paths, COMMAND's exit status and files come back, `testbed
doctor` picks netem for delay and loss, and netem delays and drops what it was told to.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from testbed import errors, vm

PROJECT = Path(__file__).resolve().parents[3]
BUDGET_S = 230  # the whole test, boot included, must stay under 4 minutes

pytestmark = [pytest.mark.slow, pytest.mark.root]


def _vm_ready() -> str | None:
    """Why the VM cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    try:
        vm.choose_kernel(None)
        vm.find_tools()
    except errors.TestbedError as exc:
        return exc.message
    return None


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict:
    reason = _vm_ready()
    if reason:
        pytest.skip(f"VM prerequisites missing ({reason}); `make setup` installs them")
    out_dir = tmp_path_factory.mktemp("vm")
    out = out_dir / "probe.json"
    done = subprocess.run(
        [sys.executable, "-m", "testbed.vm", "run", "--rwdir", str(out_dir), "--timeout", str(BUDGET_S),
         "--", "python", "-m", "tests.integration.vm.netem_probe", str(out)],
        cwd=PROJECT, capture_output=True, text=True, stdin=subprocess.DEVNULL,
        timeout=BUDGET_S + vm.KVM_PROBE_TIMEOUT_S + 30)  # a first-run KVM probe comes before the boot
    assert done.returncode == 0, f"vm run failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    assert "testbed vm: kernel" in done.stderr  # the accelerator choice is always shown
    assert '"netem_client_side"' in done.stdout  # the guest's stdout came back to the host
    return json.loads(out.read_text())


def test_the_vm_has_no_network_device(probe: dict) -> None:
    assert probe["root_interfaces"] == ["lo"]  # nothing an experiment sends can leave the VM


def test_doctor_picks_netem_inside_the_vm(probe: dict) -> None:
    doctor = probe["doctor"]
    assert doctor["netem"] is True
    assert doctor["backends"] == {"rate": "htb", "loss": "netem", "delay": "netem"}
    assert doctor["kernel"].endswith("-amd64")  # the Debian kernel, not the host's


def test_link_a_is_an_htb_class_with_a_netem_leaf_on_both_ends(probe: dict) -> None:
    for tree in probe["trees"]:
        assert [q["kind"] for q in tree["qdiscs"]] == ["htb", "netem"], tree
        assert tree["classes"][0]["rate_mbit"] == pytest.approx(100.0, rel=0.01)


def test_netem_delay_gives_the_configured_rtt(probe: dict) -> None:
    target = 2 * probe["configured"]["delay_ms_one_way"]
    rtts = probe["rtts_ms"]
    assert len(rtts) >= 0.9 * probe["pings_sent"]
    # the floor is netem's own delay; the median adds the guest's scheduling under TCG
    assert target <= min(rtts) <= target + 2.0, min(rtts)
    assert statistics.median(rtts) <= target + 5.0, statistics.median(rtts)


def test_netem_loss_matches_the_configured_rate(probe: dict) -> None:
    configured = probe["configured"]["loss_pct"]
    counts = probe["netem_client_side"]
    offered = counts["sent"] + counts["dropped"]
    assert probe["iperf_server_listening"], "iperf3 -s never listened inside the guest"
    assert offered >= probe["configured"]["udp_packets"], (counts, probe["iperf_udp"])
    measured = 100 * counts["dropped"] / offered
    # 20000 packets at 2 %: one standard deviation is 0.1 percentage points
    assert abs(measured - configured) <= 0.6, measured
    udp = probe["iperf_udp"]
    assert udp.get("packets") == probe["configured"]["udp_packets"], udp
    # end to end sees at least netem's drops (a slow guest may lose more in socket buffers)
    assert udp["lost_percent"] >= configured - 0.6, udp


def test_live_change_of_the_netem_leaf_takes_effect(probe: dict) -> None:
    changed = probe["changed"]
    target = 2 * changed["delay_ms_one_way"]
    assert len(changed["rtts_ms"]) >= 95  # loss was set to 0 in the same change
    assert target <= min(changed["rtts_ms"]) <= target + 2.0, min(changed["rtts_ms"])
    for tree in changed["trees"]:  # changed in place: same htb + netem tree, not rebuilt
        assert [q["kind"] for q in tree["qdiscs"]] == ["htb", "netem"], tree


def test_an_experiment_runs_over_netem_links(probe: dict) -> None:
    result = probe["experiment"]
    assert result["environment"]["backends"] == {"rate": "htb", "loss": "netem", "delay": "netem"}
    connection = result["connections"][0]
    assert (connection["outcome"], connection["integrity"]) == ("mptcp", "ok"), connection["evidence"]
    assert len([s for s in connection["subflows"] if s["bytes"] > 0]) == 2
    # two 20 Mbit/s paths with 10 ms and 0.5 % loss: well below 40, far above nothing
    assert 2.0 < connection["goodput_mbps"] < 40.0, connection["goodput_mbps"]
    for trees in result["shaping"].values():
        for tree in trees:
            assert [q["kind"] for q in tree["qdiscs"]] == ["htb", "netem"], tree
    assert any(q["kind"] == "netem" and q["dropped"] > 0
               for tree in result["shaping"]["a"] for q in tree["qdiscs"])
