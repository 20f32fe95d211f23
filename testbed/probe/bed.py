"""The network a probe run uses: two_path built by the project's topology code, the prober
in the client host, the implementation under test as an echo server in the server host.

`ProbeBed` is a context manager: the target process, the prober's sockets and guard, the
namespaces and the run record are removed on every exit (Ctrl-C and SIGTERM included, and
`testbed clean` finds the namespaces of a run that was killed).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from testbed import kernel_mptcp
from testbed.command import run_command
from testbed.errors import TestbedError
from testbed.net.build import Network
from testbed.net.state import RunState
from testbed.probe.command_target import CommandTarget
from testbed.probe.rawlink import RawLink
from testbed.probe.session import LISTEN_PORT
from testbed.probe.target import ADD_ADDR_TIMEOUT_S, CLIENT_DATA, python_target_config
from testbed.probe.vm_target import STOP_TIMEOUT_S, GuestControl, launch_argv, launch_env, vm_selector
from topologies import build_topology

PROBER = ("10.0.1.1", "10.0.2.1")
TARGET, ANNOUNCED, PORT = "10.0.100.2", "10.0.100.3", 5201
START_TIMEOUT_S = 10.0
VM_START_TIMEOUT_S = 300.0  # a TCG boot takes 30-45 s alone, minutes on a loaded machine


class ProbeError(TestbedError):
    """Bad input or a target that cannot be probed: one line, exit 2."""

    exit_code = 2


class ProbeBed:
    """two_path with the prober's link in `client` and the target server in `server`."""

    def __init__(self, target: str, command_stack: dict[str, str] | None = None) -> None:
        self.target = target
        self.command_stack = command_stack  # command:NAME: its [stacks.NAME] table
        self.command: CommandTarget | None = None
        self.vm_kernel = vm_selector(target)  # kernel@VERSION: the target runs in a VM
        self.control: GuestControl | None = None
        self.vm_boot_s: float | None = None
        self.state: RunState | None = None
        self.net: Network | None = None
        self.link: RawLink | None = None
        self.process: subprocess.Popen[str] | None = None
        self.clients: list[subprocess.Popen[str]] = []
        self.guest_clients = False
        self.setting = ""

    # --- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> ProbeBed:
        from testbed.runner import detect_backends

        try:
            backends = detect_backends()
            self.state = RunState.create()
            self.net = Network(build_topology("two_path", {"rate_mbit": None}), backends, self.state)
            self.net.__enter__()
            self._configure()
            self.link = RawLink(self.net.netns("client"), list(PROBER))
            if self.command_stack is not None:
                self.command = CommandTarget(self.target, self.command_stack, self.target_netns, PORT)
            self._start_target("")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.stop_clients()
        if self.command is not None:
            self.command.close()
        self._stop_target()
        if self.link is not None:
            self.link.close()
            self.link = None
        if self.net is not None:
            try:
                self.net.__exit__(None, None, None)
            finally:
                self.net = None
        if self.state is not None:
            self.state.remove()
            self.state = None

    # --- the target ------------------------------------------------------------------------------
    @property
    def kernel_target(self) -> bool:
        """A Linux kernel answers (the host's or a fetched one in a VM): counters exist."""
        return self.target == "kernel" or self.vm_kernel is not None

    @property
    def target_netns(self) -> str:
        assert self.net is not None
        return self.net.netns("server")

    def _configure(self) -> None:
        """Kernel MPTCP in the target host (joins allowed, ADD_ADDR retried after 1 s), and a
        second server address for the probes that need an announcement."""
        assert self.net is not None
        netns = self.target_netns
        device = self.net.topo.links["server"].b_interface.name
        if self.vm_kernel is not None:  # the patch panel moves one address at a time to the guest
            run_command(["sysctl", "-q", "-w", f"net.ipv4.conf.{device}.promote_secondaries=1"],
                        netns=netns, what="promote_secondaries in the target host")
        run_command(["ip", "-n", netns, "addr", "add", f"{ANNOUNCED}/24", "dev", device],
                    what="second target address")
        if self.kernel_target or self.command_stack is not None:  # a VM guest replays this;
            # a command target on the kernel (mptcpize) gets what the kernel target gets
            kernel_mptcp.configure(netns, subflows=8, add_addr_accepted=0, checksum=False)
            run_command(["sysctl", "-q", "-w", f"net.mptcp.add_addr_timeout={int(ADD_ADDR_TIMEOUT_S)}"],
                        netns=netns, what="net.mptcp.add_addr_timeout in the target host")

    def _start_target(self, setting: str) -> None:
        assert self.net is not None
        argv = [sys.executable, "-m", "testbed.probe.target", self.target, "--listen", TARGET,
                "--port", str(PORT)]
        if self.target == "python" and setting == "announce":
            argv += ["--announce", ANNOUNCED]
        if self.vm_kernel is not None:
            self._start_vm_target(setting)
            return
        if self.target == "kernel" or self.command is not None:
            run_command(["ip", "-n", self.target_netns, "mptcp", "endpoint", "flush"],
                        what="ip mptcp endpoint flush in the target host")
            if setting in ("announce", "client"):
                flag = "signal" if setting == "announce" else "subflow"
                run_command(["ip", "-n", self.target_netns, "mptcp", "endpoint", "add", ANNOUNCED,
                             "id", "10", flag], what=f"ip mptcp endpoint ({flag}) in the target host")
        if self.command is not None:
            self.command.ensure_server()
        elif self.process is None:
            self.process = subprocess.Popen(["ip", "netns", "exec", self.target_netns, *argv],
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            text=True)
            self._wait_listening()
        self.setting = setting

    def _start_vm_target(self, setting: str) -> None:
        """kernel@VERSION: boot the VM once (in place of the target host's namespace), then
        set each probe setting's MPTCP endpoint inside the guest."""
        assert self.net is not None and self.state is not None and self.vm_kernel is not None
        if self.process is None:
            vm_state = Path(self.state.work_dir) / "target.vm"
            argv = launch_argv(self.vm_kernel, vm_state, ANNOUNCED, TARGET, PORT, PROBER[0])
            launched = time.monotonic()
            self.process = subprocess.Popen(["ip", "netns", "exec", self.target_netns, *argv],
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            text=True, env=launch_env())
            process = self.process
            self.control = GuestControl(vm_state / "control", alive=lambda: process.poll() is None)
            self._wait_listening(VM_START_TIMEOUT_S)
            self.vm_boot_s = round(time.monotonic() - launched, 1)
        if setting != self.setting:
            assert self.control is not None
            problems = self.control.ask("setting", setting=setting)["problems"]
            if problems:
                raise ProbeError(f"the {self.target} guest refused its MPTCP endpoint for the "
                                 f"{setting or 'plain'} probes: {problems[0]}")
        self.setting = setting

    def _wait_listening(self, timeout_s: float = START_TIMEOUT_S) -> None:
        assert self.process is not None and self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        line = self.process.stdout.readline() if ready else ""
        if line.strip() != "listening":
            died = self.process.poll() is not None
            stderr = self.process.stderr.read() if died and self.process.stderr is not None else ""
            self._stop_target()
            tail = " | ".join(stderr.strip().splitlines()[-2:])
            raise ProbeError(f"the {self.target} target did not start listening on "
                             f"{TARGET}:{PORT} within {timeout_s:.0f} s" + (f": {tail}" if tail else ""))

    def _stop_target(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)  # a paused target must see SIGTERM
            try:  # a VM target stops its guest's program and its qemu first
                self.process.wait(timeout=3 if self.vm_kernel is None else STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self.control = None

    def check_target(self) -> None:
        """A target process that died is a run error, with the end of what it printed."""
        if self.process is None or self.process.poll() is None:
            return
        code = self.process.returncode
        stderr = self.process.stderr.read() if self.process.stderr is not None else ""
        self.process = None
        tail = " | ".join(stderr.strip().splitlines()[-3:])
        raise ProbeError(f"the {self.target} target exited with status {code} during the probes"
                         + (f": {tail}" if tail else ""))

    def use_setting(self, setting: str) -> None:
        """Reconfigure the target for the next probes ("" or "announce")."""
        if setting == self.setting:
            return
        if self.target == "python":
            self._stop_target()
        self._start_target(setting)

    def start_client(self) -> None:
        """The implementation under test as a client of the prober's listening port, joining
        from the second target address (a `subflow` endpoint for the kernel)."""
        assert self.net is not None
        if self.command is not None:
            self.command.start_client(LISTEN_PORT, CLIENT_DATA)
            return
        if self.control is not None:  # in the guest, a thread of the target's own process
            self.control.ask("client", port=LISTEN_PORT, seconds=6)
            self.guest_clients = True
            return
        argv = [sys.executable, "-m", "testbed.probe.target", self.target, "--connect", PROBER[0],
                "--port", str(LISTEN_PORT), "--local", TARGET, "--local", ANNOUNCED, "--seconds", "6"]
        self.clients.append(subprocess.Popen(["ip", "netns", "exec", self.target_netns, *argv],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                             text=True))

    def before_probe(self) -> None:
        """A command target's server program ready for the next probe's connection."""
        if self.command is not None:
            self.command.before_probe()

    def stop_clients(self) -> None:
        if self.command is not None:
            self.command.stop_clients()
        if self.guest_clients and self.control is not None:
            self.control.ask("stop_clients")
        self.guest_clients = False
        for process in self.clients:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.clients.clear()

    def pause_target(self) -> None:
        """Freeze the target process (tests of a target that never answers)."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGSTOP)

    # --- evidence --------------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        """The target namespace's MPTcpExt counters (kernel targets only; a VM's from its guest)."""
        if self.control is not None:
            return self.control.ask("counters")["counters"]
        if self.target != "kernel" or self.process is None:
            return {}
        with contextlib.suppress(TestbedError):
            return {k: v for k, v in kernel_mptcp.read_counters(self.process.pid).items()
                    if k.startswith("MPTcpExt")}
        return {}

    def target_detail(self) -> dict[str, Any]:
        if self.command is not None:
            return self.command.detail()
        if self.control is not None:
            guest = self.control.ask("detail")
            return {"stack": "linux", "kernel_release": guest["kernel_release"],
                    "kernel_selector": self.vm_kernel,
                    "vm": {"accel": os.environ.get("TESTBED_VM_ACCEL", "auto"),
                           "boot_to_listening_s": self.vm_boot_s},
                    "mptcp_sysctls": guest["mptcp_sysctls"], "mptcp_limits": guest["mptcp_limits"],
                    "endpoint": f"{TARGET}:{PORT} (echo server on an IPPROTO_MPTCP socket, in a VM)"}
        if self.target == "kernel":
            sysctls = run_command(["sysctl", "net.mptcp"], netns=self.target_netns, check=False).stdout
            limits = run_command(["ip", "-n", self.target_netns, "mptcp", "limits"], check=False).stdout
            return {"stack": "linux", "kernel_release": os.uname().release,
                    "mptcp_sysctls": dict(line.split(" = ", 1) for line in sysctls.splitlines()
                                          if " = " in line),
                    "mptcp_limits": limits.strip(),
                    "endpoint": f"{TARGET}:{PORT} (echo server on an IPPROTO_MPTCP socket)"}
        from testbed import __version__

        config = python_target_config()
        return {"stack": "testbed python stack", "version": __version__,
                "path_manager": config.path_manager, "add_addr_timeout_s": config.add_addr_timeout_s,
                "checksum": config.checksum, "endpoint": f"{TARGET}:{PORT} (echo server)"}


def settle_time() -> None:
    """Let the target's last answers to a finished probe arrive before the next one."""
    time.sleep(0.05)
