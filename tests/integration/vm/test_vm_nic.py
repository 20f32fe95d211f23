"""Prototype of issue 14 point 2: a fetched kernel's VM attached to a namespace's veth through a
patch panel (bridge + tap), reachable at the address the namespace gave up.

Real namespaces, a real veth, real qemu; the peer must learn the guest's own MAC by ARP."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from testbed import errors, vm, vm_attach
from testbed.command import run_command

PROJECT = Path(__file__).resolve().parents[3]

pytestmark = [pytest.mark.slow, pytest.mark.root]


@pytest.fixture
def veth_pair():
    """Namespaces peer (10.77.0.1/24) and panel (10.77.0.2/24) joined by a veth; removed after."""
    if os.geteuid() != 0:
        pytest.skip("needs root (namespaces, taps, the VM)")
    peer, panel = f"tbk-{os.getpid()}-peer", f"tbk-{os.getpid()}-panel"
    try:
        for name in (peer, panel):
            run_command(["ip", "netns", "add", name])
        run_command(["ip", "link", "add", "v0", "netns", peer, "type", "veth", "peer", "name", "p0",
                     "netns", panel])
        for name, ifname, address in ((peer, "v0", "10.77.0.1/24"), (panel, "p0", "10.77.0.2/24")):
            run_command(["ip", "addr", "add", address, "dev", ifname], netns=name)
            run_command(["ip", "link", "set", ifname, "up"], netns=name)
        yield peer, panel
    finally:
        for name in (peer, panel):
            run_command(["ip", "netns", "del", name], check=False)


@pytest.mark.skipif(os.environ.get("TESTBED_LONG") != "1",
                    reason="the attachment it prototyped is exercised by every VM endpoint test; "
                           "TESTBED_LONG=1 runs it")
def test_guest_answers_on_the_address_the_namespace_gave_up(veth_pair, tmp_path: Path) -> None:
    peer, panel_ns = veth_pair
    try:
        kernel = vm.fetched_kernel("6.12")
    except errors.TestbedError as exc:
        pytest.skip(f"no fetched 6.12 kernel ({exc}); run `testbed kernels fetch 6.12`")
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu is not installed (`make setup`)")
    panel = vm_attach.attach(panel_ns, "p0", 0)
    try:
        assert panel.addresses == ("10.77.0.2/24",)
        assert vm_attach._addresses(panel_ns, "p0") == ()
        nic = vm_attach.nic_for(panel, "test-run", 0, "eth0")
        probe = "ping -c 3 -W 5 10.77.0.1 >/dev/null && ip -o -4 addr show eth0"
        plan = vm.VmPlan(kernel=kernel, tools=vm.find_tools(),
                         accel=os.environ.get("TESTBED_VM_ACCEL", "tcg"), command=["sh", "-c", probe],
                         cwd=PROJECT, state_dir=tmp_path / "state", memory="1G", cpus=1,
                         netns=panel_ns, nics=[nic])
        outcome = vm.execute(plan, timeout_s=240, capture=True)
        assert outcome.command_status == 0, outcome.output[-2000:]
        assert "10.77.0.2/24" in outcome.output
        neighbours = run_command(["ip", "neigh", "show", "10.77.0.2", "dev", "v0"], netns=peer).stdout
        assert nic.mac in neighbours  # the guest itself answered ARP for the address
    finally:
        vm_attach.detach(panel)
    assert vm_attach._addresses(panel_ns, "p0") == ("10.77.0.2/24",)
