"""A kernel endpoint on a fetched kernel: the host's namespace hands its place to a VM.

`python -m testbed.endpoints.vm_kernel --kernel 6.12 --state DIR [--rwdir DIR] -- COMMAND...`
runs inside a topology host's namespace (the runner starts it there instead of the endpoint
program). It reads the namespace's configuration (testbed.vm_netconfig), turns every addressed
interface into a patch panel (testbed.vm_attach: veth + tap on a bridge, address moved to the
guest), boots the kernel under qemu in that namespace with one NIC per panel, and the guest
(testbed.endpoints.vm_guest) replays the configuration and runs COMMAND, the same endpoint
program the host would run. Its stdout is relayed here as it is written, so to the runner this
process is the endpoint: same report lines, same exit status, SIGTERM forwarded.

Afterwards DIR/vm.json holds the guest's kernel release, boot time, MPTcpExt counters and CPU
use over the transfer (the vCPU thread's share of a host core and the guest's own /proc/stat;
`cpu_bound` when either is above CPU_BOUND_SHARE). The VM's process
group, taps and bridges are removed on every exit; the VM runs in the host's namespace, so the
runner's teardown and `testbed clean` kill it with the namespace's other processes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed import vm, vm_attach, vm_pool
from testbed.command import run_command
from testbed.endpoints import vm_guest
from testbed.errors import RunFailed, TestbedError
from testbed.vm_netconfig import snapshot

CPU_BOUND_SHARE = 0.9  # a vCPU busier than this limits the endpoint, not the network
BOOT_TIMEOUT_S = 240.0  # TCG boots take 20-40 s alone; more on a loaded machine
STOP_GRACE_S = 30.0  # after SIGTERM: time for the endpoint to report and the agent to finish
GUEST_MEMORY = "1G"


@dataclass
class VcpuClock:
    """CPU ticks the qemu vCPU threads of one VM have used, read from the host's /proc."""

    session: int
    pid: int | None = None

    def qemu_pid(self) -> int | None:
        if self.pid is None or not Path(f"/proc/{self.pid}").exists():
            self.pid = self._find_qemu()
        return self.pid

    def _find_qemu(self) -> int | None:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            if comm.startswith("qemu") and int(fields[3]) == self.session:
                return int(entry.name)
        return None

    def ticks(self) -> tuple[int, int] | None:
        """(vCPU threads' utime+stime, whole qemu process's utime+stime) in clock ticks."""
        pid = self.qemu_pid()
        if pid is None:
            return None
        vcpu = 0
        try:
            for task in Path(f"/proc/{pid}/task").iterdir():
                if "CPU" in (task / "comm").read_text():
                    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                    vcpu += int(fields[11]) + int(fields[12])
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return vcpu, int(fields[11]) + int(fields[12])


def interfaces_with_addresses(netns: str | None) -> list[str]:
    done = run_command(["ip", "-o", "-4", "addr", "show"], netns=netns, what="listing addresses")
    names: list[str] = []
    for line in done.stdout.splitlines():
        name = line.split()[1]
        if name != "lo" and name not in names:
            names.append(name)
    return names


def cpu_summary(start: tuple[float, Any], end: tuple[float, Any], guest_busy: float | None) -> dict[str, Any]:
    """The endpoint's CPU use over the transfer: the vCPU threads' share of one host core, the
    qemu process's CPU seconds, the guest's own busy share, and whether it was CPU-bound."""
    tick = os.sysconf("SC_CLK_TCK")
    wall = end[0] - start[0]
    share = qemu_s = None
    if start[1] is not None and end[1] is not None and wall > 0:
        share = round((end[1][0] - start[1][0]) / tick / wall, 3)
        qemu_s = round((end[1][1] - start[1][1]) / tick, 3)
    # either view can show the limit: a vCPU thread near a whole host core, or (on a loaded host
    # that starves the vCPU thread) a guest that was itself busy nearly all of its time
    busiest = max((x for x in (share, guest_busy) if x is not None), default=None)
    return {"vcpu_busy": share, "qemu_cpu_s": qemu_s, "guest_cpu_busy": guest_busy,
            "cpu_bound": busiest is not None and busiest > CPU_BOUND_SHARE}


class Relay:
    """Copies what the guest's endpoint writes to its stdout file onto this process's stdout."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def pump(self) -> None:
        try:
            with open(self.path, "rb") as source:
                source.seek(self.offset)
                data = source.read()
        except FileNotFoundError:
            return
        if data:
            self.offset += len(data)
            sys.stdout.buffer.write(data)
            sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    command = list(args.endpoint_command)
    if command[:1] == ["--"]:
        command = command[1:]
    state = Path(args.state).resolve()
    state.mkdir(parents=True, exist_ok=True)
    kernel = vm.fetched_kernel(args.kernel)
    stop_requested: list[int] = []

    def request_stop(signum: int, frame: object) -> None:
        stop_requested.append(signum)
        (state / "terminate").touch()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    interfaces = interfaces_with_addresses(args.netns)
    if args.pool:
        held = vm_pool.lease(Path(args.pool), kernel.release, len(interfaces))
        if held is not None:
            return _run_pooled(args, command, state, kernel, interfaces, held, stop_requested)
    tools = vm.find_tools()
    accel = vm.choose_accel(args.accel, kernel, tools).accel
    config = snapshot(args.netns)
    panels: list[vm_attach.PatchPanel] = []
    running: vm.RunningVm | None = None
    try:
        nics = []
        for index, name in enumerate(interfaces):
            panel = vm_attach.attach(args.netns, name, index)
            panels.append(panel)
            nics.append(vm_attach.nic_for(panel, str(state), index, name))
        (state / "guest.json").write_text(json.dumps({"netconfig": config.as_dict(), "command": command,
                                                        "hold": args.hold}))
        plan = vm.VmPlan(kernel=kernel, tools=tools, accel=accel,
                         command=[sys.executable, "-m", "testbed.endpoints.vm_guest", str(state)],
                         cwd=vm.PROJECT_DIR, state_dir=state,
                         rw_dirs=[vm.PROJECT_DIR, *(Path(d).resolve() for d in args.rwdir)],
                         memory=GUEST_MEMORY, cpus=1, netns=args.netns, nics=nics)
        with open(state / "vm.log", "ab") as log:
            launched = time.monotonic()
            running = vm.start(plan, log.fileno())
            return _follow(state, running.alive, running.process.pid, kernel, accel, launched,
                           stop_requested)
    finally:
        if running is not None:
            vm.stop(running)
        for panel in reversed(panels):
            vm_attach.detach(panel)


def _console_tail(state: Path) -> str:
    """The guest console's last lines, for an error (the run's work directory, which holds the
    whole log, is removed when the run ends)."""
    try:
        lines = (state / "vm.log").read_text(errors="replace").strip().splitlines()[-3:]
    except OSError:
        return ""
    return f"; console: {' | '.join(line.strip() for line in lines)[-400:]}" if lines else ""


def _run_pooled(args: argparse.Namespace, command: list[str], state: Path, kernel: vm.KernelImage,
                interfaces: list[str], held: vm_pool.Lease, stop_requested: list[int]) -> int:
    """The endpoint as one job of a pooled VM (testbed.vm_pool): this namespace's interfaces
    linked to the VM's bridges, the job handed to its agent, the VM left running."""
    info = held.info
    config = snapshot(args.netns)
    panels: list[vm_attach.PatchPanel] = []
    finished = False
    try:
        nics = []
        for index, name in enumerate(interfaces):
            panel = vm_attach.attach_to_pool(args.netns, name, index, info["netns"], info["bridges"][index])
            panels.append(panel)
            nics.append({"mac": info["macs"][index], "name": name, "addresses": list(panel.addresses)})
        (state / "guest.json").write_text(json.dumps({"netconfig": config.as_dict(), "command": command,
                                                        "hold": args.hold, "nics": nics}))
        session = int(info["session"])
        launched = time.monotonic()
        vm_guest.write_atomic(held.directory / vm_guest.JOB_FILE, f"{state}\n")
        status = _follow(state, lambda: Path(f"/proc/{session}").exists(), session, kernel, info["accel"],
                         launched, stop_requested, reused={"boot_s": info["boot_s"], "netns": info["netns"]})
        finished = True
        return status
    finally:
        if not finished:  # the agent may still be busy with this job: no cell gets it again
            (held.directory / vm_pool.BROKEN_FILE).touch()
        for panel in reversed(panels):
            vm_attach.detach(panel)
        held.release()


def _follow(state: Path, alive: Callable[[], bool], session: int, kernel: vm.KernelImage, accel: str,
            launched: float, stop_requested: list[int], reused: dict[str, Any] | None = None) -> int:
    """Relay the endpoint's output until its status appears; record the VM's figures (`reused`:
    the pooled VM's own boot, when this endpoint was one job of it)."""
    relay = Relay(state / "endpoint.out")
    clock = VcpuClock(session)
    boot_s = started_s = None  # the agent up; the endpoint held (client) or listening (server)
    cpu_samples: list[tuple[float, tuple[int, int] | None]] = []
    stop_deadline = None
    while not (state / "endpoint.status").exists():
        relay.pump()
        if boot_s is None and (state / "agent.started").exists():
            boot_s = round(time.monotonic() - launched, 2)
        if started_s is None and ((state / vm_guest.READY_FILE).exists() or relay.offset):
            started_s = round(time.monotonic() - launched, 2)
        if (state / "endpoint.out").exists() and (
                not cpu_samples or time.monotonic() - cpu_samples[-1][0] >= vm_guest.CPU_SAMPLE_S):
            cpu_samples.append((time.monotonic(), clock.ticks()))
        if not alive():
            raise RunFailed(f"vm endpoint: the {kernel.release} guest stopped before the endpoint "
                            f"finished{_console_tail(state)}")
        if boot_s is None and time.monotonic() - launched > BOOT_TIMEOUT_S:
            raise RunFailed(f"vm endpoint: the {kernel.release} guest did not start within "
                            f"{BOOT_TIMEOUT_S:.0f} s ({accel}){_console_tail(state)}")
        if stop_requested and stop_deadline is None:
            stop_deadline = time.monotonic() + STOP_GRACE_S
        if stop_deadline is not None and time.monotonic() > stop_deadline:
            raise RunFailed(f"vm endpoint: the {kernel.release} guest did not stop within "
                            f"{STOP_GRACE_S:.0f} s of SIGTERM")
        time.sleep(0.05)
    cpu_end = (time.monotonic(), clock.ticks())
    relay.pump()
    status = int((state / "endpoint.status").read_text().strip() or 1)
    guest = json.loads((state / "guest-result.json").read_text())
    seconds = vm_guest.transfer_seconds(state / "endpoint.out")
    summary = {"kernel": guest["release"], "accel": accel,
               "boot_s": boot_s, "ready_s": started_s, "endpoint_s": guest["endpoint_s"],
               **cpu_summary(vm_guest.window_start(cpu_samples or [cpu_end], cpu_end[0], seconds), cpu_end,
                             guest["guest_cpu_busy"]),
               "setup_problems": guest["setup_problems"],
               **({"reused_vm": reused} if reused else {}),
               "counters_before": guest["counters_before"], "counters_after": guest["counters_after"]}
    (state / "vm.json").write_text(json.dumps(summary, indent=1))
    err = state / "endpoint.err"
    if err.exists():
        sys.stderr.write(err.read_text(errors="replace"))
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.endpoints.vm_kernel",
                                     description="run a kernel endpoint in a VM attached to this namespace")
    parser.add_argument("--kernel", required=True, help="a fetched kernel: 6.1, 6.12, newest or a release")
    parser.add_argument("--state", required=True, help="the VM's state directory (shared with the guest)")
    parser.add_argument("--rwdir", action="append", default=[], help="another directory the guest writes")
    parser.add_argument("--hold", action="store_true",
                        help="start the endpoint when STATE/go appears (a client: after the server listens)")
    parser.add_argument("--netns", default=None, help="the host's namespace (default: this process's)")
    parser.add_argument("--accel", default=os.environ.get("TESTBED_VM_ACCEL", "auto"), choices=vm.ACCELS)
    parser.add_argument("--pool", default=os.environ.get(vm_pool.POOL_ENV),
                        help="a VM pool's directory (testbed.vm_pool): run as a job of a free VM of "
                             "this kernel there if there is one (default: $" + vm_pool.POOL_ENV + ")")
    parser.add_argument("endpoint_command", nargs=argparse.REMAINDER, metavar="-- COMMAND")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except TestbedError as exc:
        print(f"testbed: {exc.message}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
