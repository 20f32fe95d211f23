"""The VM pool's plumbing without booting anything (issue 14 point 2, one boot per kernel per
matrix): which cells need which VMs, leases of pooled VMs, the guest agent's job loop, and the
NIC names it parks between jobs."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from testbed import vm_pool
from testbed.endpoints import vm_guest
from testbed.matrix import parse_matrix_spec

RELEASE = "6.12.117+deb13-amd64"


def _matrix() -> Any:
    return parse_matrix_spec({
        "pairings": ["kernel@6.12-kernel", "kernel-kernel", "python-kernel@6.1", "kernel@6.1-kernel@newest"],
        "base": {"topology": {"name": "two_path"}, "traffic": {"seconds": 1}},
        "middleboxes": [{"name": "none", "chain": []}]})


def test_each_cell_names_the_kernels_of_its_vm_endpoints_and_their_nic_counts() -> None:
    sides = {cell.pairing: vm_pool.vm_sides(cell.spec) for cell in _matrix().cells}
    # two_path: the client has two addressed interfaces, the server one
    assert sides == {"kernel@6.12-kernel": [("6.12", 2)], "kernel-kernel": [],
                     "python-kernel@6.1": [("6.1", 1)],
                     "kernel@6.1-kernel@newest": [("newest", 1), ("6.1", 2)]}


def test_no_pool_without_vm_endpoints_or_with_reuse_off(monkeypatch: pytest.MonkeyPatch) -> None:
    host_only = [c.spec for c in _matrix().cells if c.pairing == "kernel-kernel"]
    with vm_pool.for_cells(host_only) as pool:
        assert pool is None
    monkeypatch.setenv(vm_pool.REUSE_ENV, "0")
    with vm_pool.for_cells(c.spec for c in _matrix().cells) as pool:
        assert pool is None


class FakePool:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def retire(self, needed: Any) -> None:
        self.calls.append(("retire", sorted(needed)))

    def ensure(self, selectors: Any, progress: Any = None) -> None:
        self.calls.append(("ensure", list(selectors)))


def test_before_a_cell_the_vms_no_later_cell_needs_stop_and_its_own_boot() -> None:
    cells = list(_matrix().cells)
    pool = FakePool()
    vm_pool.prepare(pool, [cells[2]], cells[2:], print)  # type: ignore[arg-type]
    assert pool.calls == [("retire", ["6.1", "6.1", "newest"]), ("ensure", ["6.1"])]
    vm_pool.prepare(None, cells, cells, print)  # no pool: nothing to do


def _pooled(root: Path, name: str, release: str = RELEASE, nics: int = 2) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    (directory / vm_pool.POOL_FILE).write_text(json.dumps({
        "release": release, "accel": "tcg", "netns": f"tb-abcdef-{name}", "session": 1, "boot_s": 40.0,
        "bridges": [f"tbbr{i}" for i in range(nics)], "macs": [f"52:54:00:00:00:0{i}" for i in range(nics)]}))
    return directory


def test_a_pooled_vm_serves_one_cell_at_a_time(tmp_path: Path) -> None:
    _pooled(tmp_path, "vm0")
    _pooled(tmp_path, "vm1")
    _pooled(tmp_path, "vm2", release="6.1.0-50-amd64")
    (tmp_path / "vm3").mkdir()  # still booting: no pool.json yet
    first = vm_pool.lease(tmp_path, RELEASE, 2)
    second = vm_pool.lease(tmp_path, RELEASE, 1)
    assert first is not None and second is not None
    assert {first.directory.name, second.directory.name} == {"vm0", "vm1"}
    assert vm_pool.lease(tmp_path, RELEASE, 1) is None  # both held
    first.release()
    again = vm_pool.lease(tmp_path, RELEASE, 2)
    assert again is not None and again.directory == first.directory
    again.release()
    assert vm_pool.lease(tmp_path, RELEASE, 3) is None  # a host with more interfaces than NICs
    (first.directory / vm_pool.BROKEN_FILE).touch()
    assert vm_pool.lease(tmp_path, RELEASE, 1) is None  # a job that did not end: never again
    second.release()
    assert vm_pool.lease(tmp_path, "7.2.13+deb14-amd64", 1) is None
    # an agent still on the previous job is waited for, then passed over
    busy = _pooled(tmp_path, "vm4", release="6.1.0-50-amd64")
    (busy / vm_guest.JOB_FILE).write_text("/run/testbed/abc/client.vm\n")
    idle = vm_pool.lease(tmp_path, "6.1.0-50-amd64", 1, idle_wait_s=0.2)
    assert idle is not None and idle.directory.name == "vm2"
    assert vm_pool.lease(tmp_path, "6.1.0-50-amd64", 1, idle_wait_s=0.2) is None
    (busy / vm_guest.DONE_FILE).write_text("/run/testbed/abc/client.vm\n")
    done = vm_pool.lease(tmp_path, "6.1.0-50-amd64", 1, idle_wait_s=0.2)
    assert done is not None and done.directory == busy


def _done(state: Path) -> str:
    try:
        return (state / vm_guest.DONE_FILE).read_text().strip()
    except FileNotFoundError:
        return ""


def test_the_agent_runs_each_job_once_in_order_until_stopped(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[tuple[str, int]] = []
    monkeypatch.setattr(vm_guest, "serve_one", lambda job, number: served.append((job.name, number)))
    agent = threading.Thread(target=vm_guest.serve, args=(tmp_path,))
    agent.start()
    try:
        for job in ("cell-a", "cell-b"):
            vm_guest.write_atomic(tmp_path / vm_guest.JOB_FILE, str(tmp_path / job) + "\n")
            deadline = time.monotonic() + 5
            while _done(tmp_path) != str(tmp_path / job):
                assert time.monotonic() < deadline, f"{job} not served"
                time.sleep(0.01)
        time.sleep(0.2)  # the same job file seen again is not a new job
    finally:
        (tmp_path / vm_guest.STOP_FILE).touch()
        agent.join(timeout=5)
    assert not agent.is_alive()
    assert served == [("cell-a", 1), ("cell-b", 2)]
    assert (tmp_path / "agent.started").exists()


def test_parked_nic_names_are_unique_per_mac_and_fit_an_interface_name() -> None:
    names = {vm_guest.parked_name(f"52:54:0a:0b:0c:{i:02x}") for i in range(16)}
    assert len(names) == 16
    assert all(len(name) <= 15 for name in names)
    assert vm_guest.parked_name("52:54:AA:BB:CC:DD") == "tbaabbccdd"


def test_a_job_namespace_is_set_up_by_one_ip_batch_whose_failures_are_named() -> None:
    from testbed.vm_netconfig import NetConfig

    config = NetConfig(sysctls={"net.mptcp.enabled": "1"},
                       routes=[["default", "via", "10.0.1.2", "dev", "eth0", "table", "101"]],
                       rules=[["pref", "100", "from", "10.0.1.1", "table", "101"]],
                       mptcp_limits=["subflows", "2", "add_addr_accepted", "0"],
                       mptcp_endpoints=[["10.0.2.1", "id", "1", "subflow", "dev", "eth1"]])
    nics = [{"device": "tb00000001", "name": "eth0", "addresses": ["10.0.1.1/24"]},
            {"device": "tb00000002", "name": "eth1", "addresses": ["10.0.2.1/24"]}]
    lines = vm_guest.batch_lines(nics, config)
    assert lines == ["link set lo up",
                     "link set tb00000001 name eth0", "addr add 10.0.1.1/24 dev eth0", "link set eth0 up",
                     "link set tb00000002 name eth1", "addr add 10.0.2.1/24 dev eth1", "link set eth1 up",
                     "route add default via 10.0.1.2 dev eth0 table 101",
                     "rule add pref 100 from 10.0.1.1 table 101",
                     "mptcp limits set subflows 2 add_addr_accepted 0", "mptcp endpoint flush",
                     "mptcp endpoint add 10.0.2.1 id 1 subflow dev eth1"]
    # what `ip -force -batch` writes when line 8 fails (an older kernel, a missing device)
    stderr = 'Error: Nexthop has invalid gateway.\nCommand failed -:8\n'
    assert vm_guest.batch_problems(lines, stderr) == [
        "ip route add default via 10.0.1.2 dev eth0 table 101: Error: Nexthop has invalid gateway."]
    assert vm_guest.batch_problems(lines, "") == []


def test_a_job_whose_run_is_gone_is_ended_so_the_agent_can_serve_the_next(tmp_path: Path) -> None:
    import shutil

    job = tmp_path / "client.vm"
    job.mkdir()
    (job / "guest.json").write_text(json.dumps({"netconfig": {}, "command": ["sleep", "60"], "hold": False}))
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(vm_guest.run_job(job, [], dict, configured=[]))
        except vm_guest.JobAbandoned as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    started = time.monotonic()
    worker.start()
    while not (job / "endpoint.out").exists():
        time.sleep(0.01)
    shutil.rmtree(job)  # the host's run ended (its work directory removed) without waiting
    worker.join(timeout=10)
    assert not worker.is_alive() and time.monotonic() - started < 10
    assert isinstance(outcome[0], vm_guest.JobAbandoned)


def test_a_job_removed_while_its_files_are_opened_is_abandoned_too(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The race the test above hit under load: the host removes the job between the loop's
    check and the open of endpoint.err; that is the same abandonment, not a FileNotFoundError."""
    import shutil

    job = tmp_path / "client.vm"
    job.mkdir()
    (job / "guest.json").write_text(json.dumps({"netconfig": {}, "command": ["sleep", "60"], "hold": False}))
    opened = vm_guest._open_in_job

    def removed_before_the_second(state: Path, name: str):
        if name == "endpoint.err":
            shutil.rmtree(state)
        return opened(state, name)

    monkeypatch.setattr(vm_guest, "_open_in_job", removed_before_the_second)
    with pytest.raises(vm_guest.JobAbandoned):
        vm_guest.run_job(job, [], dict, configured=[])


def test_a_cell_with_both_endpoints_on_one_release_gets_two_vms(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    """A survey's kernel@VERSION experiment puts client and server on one release: the pool
    boots two VMs of it once, for every experiment, instead of each run booting two."""
    from types import SimpleNamespace

    monkeypatch.setattr(vm_pool.kernels, "find_fetched",
                        lambda selector, _cache: SimpleNamespace(release=f"rel-{selector}"))
    pool = vm_pool.VmPool(nics=2)
    booted: list[str] = []

    def start(release: str) -> Any:
        booted.append(release)
        pooled = vm_pool.PooledVm(release, tmp_path / f"vm{len(booted)}", "ns", None, [], "tcg", 0.0)  # type: ignore[arg-type]
        pool.vms.append(pooled)
        return pooled

    monkeypatch.setattr(pool, "_start", start)
    monkeypatch.setattr(pool, "_wait", lambda pooled: None)
    both = parse_matrix_spec({
        "pairings": ["kernel@6.12-kernel@6.12", "kernel@6.12-kernel"],
        "base": {"topology": {"name": "two_path"}, "traffic": {"seconds": 1}},
        "middleboxes": [{"name": "none", "chain": []}, {"name": "again", "chain": []}]})
    specs = [cell.spec for cell in both.cells]
    vm_pool.prepare_specs(pool, specs, specs, None)  # the most one spec needs: two of 6.12
    assert booted == ["rel-6.12", "rel-6.12"]
    vm_pool.prepare_specs(pool, specs[1:2], specs[1:], None)
    assert booted == ["rel-6.12", "rel-6.12"]  # both still there: nothing new
    pool.vms.pop()  # one stopped (broken, say): the next spec that needs two boots one
    vm_pool.prepare_specs(pool, specs[2:3], specs[2:], None)
    assert booted == ["rel-6.12", "rel-6.12", "rel-6.12"]


def test_under_jobs_the_waiting_cells_on_one_kernel_get_a_vm_each_that_may_run_at_once() -> None:
    cells = [c for c in _matrix().cells if c.pairing in ("kernel@6.12-kernel", "python-kernel@6.1")]
    pool = FakePool()
    vm_pool.prepare(pool, cells * 3, cells, print, at_once=2)  # type: ignore[arg-type]
    assert sorted(pool.calls[-1][1]) == ["6.1", "6.1", "6.12", "6.12"]
    pool = FakePool()
    vm_pool.prepare(pool, cells, cells, print, at_once=2)  # type: ignore[arg-type]
    assert sorted(pool.calls[-1][1]) == ["6.1", "6.12"]  # one cell each: one VM each
