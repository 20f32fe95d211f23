"""VMs that outlive a cell: one boot per kernel per matrix (issue 14 point 2).

A matrix whose pairings put kernel endpoints on fetched kernels would boot a VM per cell (30-100 s
under TCG). Instead `VmPool` (owned by the matrix process) boots one VM per kernel release the
cells need, each in a namespace of its own (`tb-<pool id>-vm<k>`, recorded like a run's, so
`testbed clean` kills its qemu and removes it), with one tap per NIC on a bridge there. The guest
runs the persistent agent (`testbed.endpoints.vm_guest --serve`). A cell's VM endpoint
(testbed.endpoints.vm_kernel, told the pool's directory by TESTBED_VM_POOL) leases a free VM of
its release (an exclusive flock on LEASE_FILE), links each of its host's interfaces to the VM's
bridges by a veth pair (testbed.vm_attach.attach_to_pool), and hands the agent one job; the agent
runs it in a fresh namespace of the guest. A cell finding no free VM of its release (two cells
at once under --jobs, or a host with more interfaces than the VM has NICs) boots its own, as
without a pool. VMs no remaining cell needs are stopped early; all of them when the matrix
ends, is interrupted or fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed import kernels, vm
from testbed.command import run_command
from testbed.endpoints import vm_guest
from testbed.errors import RunFailed
from testbed.net.state import STATE_DIR, RunState, delete_netns
from testbed.vm_attach import guest_mac

POOL_ENV = "TESTBED_VM_POOL"  # the pool's directory, for the cells' VM endpoints
REUSE_ENV = "TESTBED_VM_REUSE"  # "0": every cell boots its own VM (as before the pool)
POOL_FILE = "pool.json"  # in a VM's directory: what a lease needs to use it
LEASE_FILE = "lease"
BROKEN_FILE = "broken"  # a VM whose job did not end cleanly: no further leases
BOOT_TIMEOUT_S = 300.0
IDLE_WAIT_S = 60.0  # for a leased VM's agent to finish the previous cell's job
GUEST_MEMORY = "1G"


def enabled() -> bool:
    return os.environ.get(REUSE_ENV, "1") != "0"


def vm_sides(spec: Any) -> list[tuple[str, int]]:
    """(kernel selector, addressed interfaces of its host) per VM endpoint of a cell's spec."""
    from topologies import build_topology

    sides = [e for e in spec.endpoints if e.kernel is not None]
    if not sides:
        return []
    topo = build_topology(spec.topology, spec.topology_params)
    return [(e.kernel, len({iface.name for _l, iface, _p in topo.l3_interfaces(e.host) if iface.address}))
            for e in sides]


@dataclass
class PooledVm:
    release: str
    directory: Path
    netns: str
    running: vm.RunningVm
    macs: list[str]
    accel: str
    launched: float  # monotonic time of the launch
    boot_s: float = 0.0  # launch to the agent's start


@dataclass
class VmPool:
    """The VMs of one matrix; use as a context manager (everything is removed on exit)."""

    nics: int
    accel: str = field(default_factory=lambda: os.environ.get("TESTBED_VM_ACCEL", "auto"))
    state: RunState | None = None
    vms: list[PooledVm] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # release -> why its boot failed

    @property
    def root(self) -> Path:
        assert self.state is not None
        return Path(self.state.work_dir)

    def __enter__(self) -> VmPool:
        self.state = RunState.create()
        os.environ[POOL_ENV] = str(self.root)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def releases(self) -> dict[str, float]:
        """release -> boot seconds of every VM booted so far (for the matrix document)."""
        return {v.release: v.boot_s for v in self.vms}

    def ensure(self, selectors: Iterable[str], progress: Any = None) -> None:
        """As many healthy VMs of each release as `selectors` name it (a cell with both
        endpoints on one release needs two at once), the missing ones booted side by side (a
        failed boot is not retried: those cells boot their own)."""
        wanted = Counter(kernels.find_fetched(s, kernels.cache_dir()).release for s in selectors)
        missing: list[str] = []
        for release, count in wanted.items():
            healthy = sum(1 for v in self.vms
                          if v.release == release and not (v.directory / BROKEN_FILE).exists())
            if release not in self.failed:
                missing += [release] * max(0, count - healthy)
        if not missing:
            return
        if progress is not None:
            progress(f"booting {', '.join(missing)} (one VM each, for every cell on its release)")
        started = []
        for release in missing:
            try:
                started.append(self._start(release))
            except RunFailed as exc:
                self._failed(release, exc.message)
        for pooled in started:
            try:
                self._wait(pooled)
            except RunFailed as exc:
                self._failed(pooled.release, exc.message)

    def _failed(self, release: str, message: str) -> None:
        self.failed[release] = message
        print(f"testbed: vm pool: {message}; its cells boot their own VMs", file=sys.stderr)

    def retire(self, needed: Iterable[str]) -> None:
        """Stop the VMs whose release no remaining cell needs (and any broken one)."""
        wanted = {kernels.find_fetched(s, kernels.cache_dir()).release for s in needed}
        for pooled in list(self.vms):
            if pooled.release not in wanted or (pooled.directory / BROKEN_FILE).exists():
                self._stop(pooled)

    def close(self) -> None:
        for pooled in list(self.vms):
            self._stop(pooled)
        if os.environ.get(POOL_ENV) == str(self.root):
            del os.environ[POOL_ENV]
        if self.state is not None:
            delete_netns(self.state.netns)  # also those of a boot that failed half-way
            self.state.remove()

    def _stop(self, pooled: PooledVm) -> None:
        (pooled.directory / vm_guest.STOP_FILE).touch()
        vm.stop(pooled.running)
        delete_netns([pooled.netns])
        shutil.rmtree(pooled.directory, ignore_errors=True)
        self.vms.remove(pooled)

    def _start(self, release: str) -> PooledVm:
        """Its namespace, taps and bridges, and qemu started (the boot goes on)."""
        assert self.state is not None
        index = len(self.state.netns)
        netns = self.state.netns_name(f"vm{index}")
        self.state.add_netns(netns)  # recorded first: `testbed clean` finds it after a crash
        directory = self.root / f"vm{index}"
        directory.mkdir(parents=True)
        run_command(["ip", "netns", "add", netns], what=f"creating {netns}")
        macs = [guest_mac(f"{self.state.run_id}/vm{index}", i) for i in range(self.nics)]
        for i in range(self.nics):
            for argv in (["ip", "tuntap", "add", "dev", f"tbtap{i}", "mode", "tap"],
                         ["ip", "link", "add", f"tbbr{i}", "type", "bridge", "forward_delay", "0"],
                         ["ip", "link", "set", f"tbtap{i}", "master", f"tbbr{i}"],
                         ["ethtool", "-K", f"tbtap{i}", "tso", "off", "gso", "off", "gro", "off"],
                         ["ip", "link", "set", f"tbtap{i}", "up"], ["ip", "link", "set", f"tbbr{i}", "up"]):
                run_command(argv, netns=netns, what=f"VM pool NIC {i} in {netns}")
        kernel = vm.fetched_kernel(release)
        tools = vm.find_tools()
        accel = vm.choose_accel(self.accel, kernel, tools).accel
        nics = [vm.GuestNic(tap=f"tbtap{i}", mac=mac, name=vm_guest.parked_name(mac))
                for i, mac in enumerate(macs)]
        agent = [sys.executable, "-m", "testbed.endpoints.vm_guest", "--serve", str(directory)]
        plan = vm.VmPlan(kernel=kernel, tools=tools, accel=accel, command=agent,
                         cwd=vm.PROJECT_DIR, state_dir=directory, rw_dirs=[vm.PROJECT_DIR, STATE_DIR],
                         memory=GUEST_MEMORY, cpus=1, netns=netns, nics=nics)
        launched = time.monotonic()
        with open(directory / "vm.log", "ab") as log:
            running = vm.start(plan, log.fileno())
        pooled = PooledVm(release, directory, netns, running, macs, accel, launched)
        self.vms.append(pooled)  # from here on, close() stops it
        return pooled

    def _wait(self, pooled: PooledVm) -> None:
        """Until its agent runs; then pool.json tells the cells it is there."""
        directory, running, release, accel = pooled.directory, pooled.running, pooled.release, pooled.accel
        launched = pooled.launched
        while not (directory / "agent.started").exists():
            problem = ("stopped while booting" if not running.alive() else
                       f"did not start within {BOOT_TIMEOUT_S:.0f} s ({accel})"
                       if time.monotonic() - launched > BOOT_TIMEOUT_S else None)
            if problem:
                self._stop(pooled)
                raise RunFailed(f"the {release} VM {problem}")
            time.sleep(0.1)
        pooled.boot_s = round(time.monotonic() - launched, 2)
        (directory / POOL_FILE).write_text(json.dumps({
            "release": release, "accel": accel, "netns": pooled.netns, "session": running.process.pid,
            "bridges": [f"tbbr{i}" for i in range(self.nics)], "macs": pooled.macs, "boot_s": pooled.boot_s}))


@contextlib.contextmanager
def for_cells(specs: Iterable[Any]) -> Iterator[VmPool | None]:
    """A pool sized for these cells' VM endpoints (None when none has one or reuse is off)."""
    sides = [side for spec in specs for side in vm_sides(spec)]
    if not sides or not enabled():
        yield None
        return
    with VmPool(nics=max(n for _s, n in sides)) as pool:
        yield pool


def prepare(pool: VmPool | None, cells: Iterable[Any], remaining: Iterable[Any], progress: Any,
            at_once: int = 1) -> None:
    """Before `cells` run (up to `at_once` of them side by side, as under --jobs): stop the VMs
    no remaining cell needs, boot those these cells need."""
    prepare_specs(pool, [cell.spec for cell in cells], [cell.spec for cell in remaining], progress, at_once)


def prepare_specs(pool: VmPool | None, specs: Iterable[Any], remaining: Iterable[Any], progress: Any,
                  at_once: int = 1) -> None:
    """prepare() for experiment specs: as many VMs of a kernel as one of `specs` uses, times
    the number of specs on that kernel that may run at once."""
    if pool is None:
        return
    pool.retire(kernel for spec in remaining for kernel, _n in vm_sides(spec))
    most: Counter[str] = Counter()  # the most VMs of a kernel any one spec uses
    users: Counter[str] = Counter()  # the specs that use a kernel
    for spec in specs:
        uses = Counter(kernel for kernel, _n in vm_sides(spec))
        most |= uses
        users.update(uses.keys())
    pool.ensure([kernel for kernel, count in most.items()
                 for _ in range(count * min(max(at_once, 1), users[kernel]))], progress)


# --- the lease side (testbed.endpoints.vm_kernel, in a cell's host namespace) ---------------------

@dataclass
class Lease:
    """A pooled VM held by one cell's VM endpoint until `release`."""

    directory: Path
    info: dict[str, Any]
    handle: Any

    def release(self) -> None:
        self.handle.close()


def _text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def lease(root: Path, release: str, nics: int, idle_wait_s: float = IDLE_WAIT_S) -> Lease | None:
    """A free, healthy, idle VM of `release` with at least `nics` NICs, held exclusively; else
    None (the caller boots its own)."""
    import fcntl

    for directory in sorted(root.glob("vm*")):
        try:
            info = json.loads((directory / POOL_FILE).read_text())
        except (OSError, ValueError):
            continue  # still booting, or stopped
        if info["release"] != release or len(info["macs"]) < nics or (directory / BROKEN_FILE).exists():
            continue
        handle = open(directory / LEASE_FILE, "a")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        # the agent finishes a job (its namespace removed) shortly after the cell that gave it;
        # one a killed cell left runs until its endpoint sees that the run is gone
        deadline = time.monotonic() + idle_wait_s
        while _text(directory / vm_guest.JOB_FILE) != _text(directory / vm_guest.DONE_FILE):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        else:
            return Lease(directory, info, handle)
        handle.close()
    return None
