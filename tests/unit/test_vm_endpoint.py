"""A kernel endpoint on a fetched kernel (issue 14 point 2), without booting anything: the spec
key, kernel selection in the run plan and its error, the launcher's command line, the namespace
snapshot's parsing and replay, the VM's NIC options and the CPU-use arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed import kernels, vm
from testbed.endpoints import vm_guest, vm_kernel
from testbed.errors import SpecError
from testbed.net.shaping import Backends
from testbed.runner import plan_run
from testbed.spec import load_spec, parse_spec
from testbed.vm_netconfig import (
    NetConfig,
    parse_mptcp_endpoints,
    parse_mptcp_limits,
    parse_routes,
    parse_rules,
)

EXPERIMENTS = Path(__file__).parents[2] / "experiments"
BACKENDS = Backends(rate="htb", loss="nft", delay="userspace")
RELEASE = "6.12.117+deb13-amd64"


def _raw_spec(**client: object) -> dict:
    return {"topology": {"name": "two_path"}, "traffic": {"bytes": 1000},
            "endpoints": [{"role": "server", "stack": "kernel"},
                          {"role": "client", "stack": "kernel", **client}]}


def test_the_kernel_key_takes_a_selector_or_host_and_only_on_kernel_endpoints() -> None:
    assert parse_spec(_raw_spec(kernel="6.12")).client.kernel == "6.12"
    assert parse_spec(_raw_spec(kernel="newest")).client.kernel == "newest"
    assert parse_spec(_raw_spec(kernel="host")).client.kernel is None
    assert parse_spec(_raw_spec()).client.kernel is None
    with pytest.raises(SpecError, match=r"endpoints\[1\]\.kernel: only kernel endpoints .* python"):
        parse_spec(_raw_spec(kernel="6.12", stack="python"))
    with pytest.raises(SpecError, match=r"endpoints\[1\]\.kernel: '6\.12 rc' is not a kernel release"):
        parse_spec(_raw_spec(kernel="6.12 rc"))
    with pytest.raises(SpecError, match=r"endpoints\[1\]\.kernel"):
        parse_spec(_raw_spec(kernel=612))


def _fake_cache(cache: Path) -> None:
    root = cache / RELEASE
    root.mkdir(parents=True)
    (root / kernels.METADATA).write_text(json.dumps({
        "release": RELEASE, "package": f"linux-image-{RELEASE}", "version": "6.12.117-1", "suite": "trixie"}))


def _spec_with_kernel(role: str, selector: str):
    spec = load_spec(EXPERIMENTS / "two_path_kernel.toml")
    endpoints = tuple(type(e)(e.role, e.host, e.stack, e.stack_config, selector if e.role == role else None)
                      for e in spec.endpoints)
    return type(spec)(**{**spec.__dict__, "endpoints": endpoints})


def test_a_missing_kernel_stops_the_plan_naming_the_fetch_command(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kernels.CACHE_ENV, str(tmp_path / "empty"))
    with pytest.raises(SpecError, match=r"no fetched kernel matches '6\.1'.*`testbed kernels fetch 6\.1`"):
        plan_run(_spec_with_kernel("client", "6.1"), tmp_path, BACKENDS)


@pytest.mark.parametrize("role", ["client", "server"])
def test_a_vm_endpoint_runs_the_same_program_through_the_launcher(role: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cache(tmp_path / "cache")
    monkeypatch.setenv(kernels.CACHE_ENV, str(tmp_path / "cache"))
    host_plan = plan_run(load_spec(EXPERIMENTS / "two_path_kernel.toml"), tmp_path, BACKENDS)
    plan = plan_run(_spec_with_kernel(role, "6.12"), tmp_path, BACKENDS)
    vm_end = plan.client if role == "client" else plan.server
    host_end = plan.server if role == "client" else plan.client
    same_as_host = host_plan.client if role == "client" else host_plan.server
    command = vm_end.command
    assert command[1:3] == ["-m", "testbed.endpoints.vm_kernel"]
    assert command[command.index("--kernel") + 1] == RELEASE
    assert command[command.index("--state") + 1] == str(tmp_path / f"{role}.vm") == str(vm_end.vm_state)
    assert ("--hold" in command) == (role == "client")  # a client boots before the server listens
    assert command[command.index("--") + 1:] == same_as_host.command
    assert vm_end.record.kernel == RELEASE
    assert host_end.vm_state is None and host_end.command[1:3] == ["-m", "testbed.endpoints.kernel"]
    assert host_end.record.kernel == host_plan.server.record.kernel  # the host's release


ROUTES = """\
default via 10.0.1.2 dev eth0 table 101 proto static congctl cubic
10.0.1.0/24 dev eth0 table 101 proto static scope link linkdown
default via 10.0.1.2 dev eth0 proto static
10.0.1.0/24 dev eth0 proto kernel scope link src 10.0.1.1
local 10.0.1.1 dev eth0 table local proto kernel scope host src 10.0.1.1
broadcast 10.0.1.255 dev eth0 table local proto kernel scope link src 10.0.1.1
"""
RULES = """\
0:\tfrom all lookup local
1000:\tfrom 10.0.1.1 lookup 101
1000:\tfrom 10.0.2.1 lookup 102
32766:\tfrom all lookup main
32767:\tfrom all lookup default
"""


def test_the_namespace_snapshot_keeps_what_the_runner_set_and_drops_what_the_kernel_makes() -> None:
    assert parse_routes(ROUTES) == [
        ["default", "via", "10.0.1.2", "dev", "eth0", "table", "101", "proto", "static", "congctl", "cubic"],
        ["10.0.1.0/24", "dev", "eth0", "table", "101", "proto", "static", "scope", "link"],
        ["default", "via", "10.0.1.2", "dev", "eth0", "proto", "static"]]
    assert parse_rules(RULES) == [["pref", "1000", "from", "10.0.1.1", "lookup", "101"],
                                  ["pref", "1000", "from", "10.0.2.1", "lookup", "102"]]
    assert parse_mptcp_limits("add_addr_accepted 0 subflows 2 \n") == [
        "add_addr_accepted", "0", "subflows", "2"]
    assert parse_mptcp_endpoints("10.0.2.1 id 1 subflow dev eth1 \n\n") == [
        ["10.0.2.1", "id", "1", "subflow", "dev", "eth1"]]


def test_the_guest_replays_sysctls_then_routes_rules_and_mptcp() -> None:
    config = NetConfig(sysctls={"net.mptcp.enabled": "1"}, routes=[["default", "via", "10.0.1.2"]],
                       rules=[["pref", "1000", "from", "10.0.1.1", "lookup", "101"]],
                       mptcp_limits=["subflows", "2"],
                       mptcp_endpoints=[["10.0.2.1", "subflow", "dev", "eth1"]])
    assert NetConfig.from_dict(json.loads(json.dumps(config.as_dict()))) == config
    assert config.commands() == [
        ["sysctl", "-q", "-w", "net.mptcp.enabled=1"], ["ip", "route", "add", "default", "via", "10.0.1.2"],
        ["ip", "rule", "add", "pref", "1000", "from", "10.0.1.1", "lookup", "101"],
        ["ip", "mptcp", "limits", "set", "subflows", "2"], ["ip", "mptcp", "endpoint", "flush"],
        ["ip", "mptcp", "endpoint", "add", "10.0.2.1", "subflow", "dev", "eth1"]]


def test_a_vm_endpoints_qemu_gets_named_vcpu_threads_and_offload_free_nics(tmp_path: Path) -> None:
    kernel = vm.KernelImage(tmp_path / "vmlinuz", RELEASE, tmp_path / "modules", fetched=True)
    tools = vm.Tools(Path("/bin/vng"), Path("/bin/qemu"), Path("/bin/busybox"))
    nic = vm.GuestNic(tap="tbtap0", mac="52:54:00:aa:bb:cc", name="eth0", addresses=("10.0.1.1/24",))
    plan = vm.VmPlan(kernel=kernel, tools=tools, accel="tcg", command=["true"], cwd=tmp_path,
                     state_dir=tmp_path, netns="tb-x-client", nics=[nic])
    argv = " ".join(vm.build_vng_argv(plan))
    assert "-name debug-threads=on" in argv  # how VcpuClock finds the vCPU threads
    assert "-netdev tap,id=tbn0,ifname=tbtap0" in argv and "mac=52:54:00:aa:bb:cc,csum=off" in argv
    script = vm.plan_guest_script(plan)
    assert "ip link set \"$dev\" name eth0 && ip addr add 10.0.1.1/24 dev eth0" in script
    no_nic = vm.VmPlan(kernel=kernel, tools=tools, accel="tcg", command=["true"], cwd=tmp_path,
                       state_dir=tmp_path)
    assert "debug-threads" not in " ".join(vm.build_vng_argv(no_nic))


def test_cpu_use_is_taken_over_the_transfer_not_the_programs_start_up(tmp_path: Path) -> None:
    out = tmp_path / "endpoint.out"
    out.write_text('{"event":"listening"}\nnot json\n{"event":"report","duration_s":2.0}\n')
    assert vm_guest.transfer_seconds(out) == 2.0
    assert vm_guest.transfer_seconds(tmp_path / "missing") is None
    samples = [(0.0, "boot"), (5.0, "imports"), (8.0, "transfer"), (9.0, "late")]
    assert vm_guest.window_start(samples, 10.0, 2.0) == (8.0, "transfer")
    assert vm_guest.window_start(samples, 10.0, None) == (0.0, "boot")
    assert vm_guest.window_start(samples, 10.0, 20.0) == (0.0, "boot")
    assert vm_guest.busy_fraction((10, 100), (60, 200)) == 0.5
    assert vm_guest.busy_fraction((10, 100), (10, 100)) is None
    tick = vm_kernel.os.sysconf("SC_CLK_TCK")
    busy = vm_kernel.cpu_summary((0.0, (0, 0)), (2.0, (int(1.9 * tick), int(2.5 * tick))), 0.5)
    assert busy["vcpu_busy"] == 0.95 and busy["qemu_cpu_s"] == 2.5 and busy["cpu_bound"] is True
    starved = vm_kernel.cpu_summary((0.0, (0, 0)), (2.0, (int(0.4 * tick), tick)), 0.99)
    assert starved["vcpu_busy"] == 0.2 and starved["cpu_bound"] is True  # a loaded host starved it
    idle = vm_kernel.cpu_summary((0.0, (0, 0)), (2.0, (int(0.4 * tick), tick)), 0.5)
    assert idle["cpu_bound"] is False
    unknown = vm_kernel.cpu_summary((0.0, None), (2.0, None), 0.95)
    assert unknown["vcpu_busy"] is None and unknown["cpu_bound"] is True
