"""A throwaway line of three namespaces for the tests and the benchmark:

    ns A (10.99.0.1/24) a-eth0 ==veth== b-left  [ns B: bump]  b-right ==veth== c-eth0 (10.99.0.2/24) ns C

With `ipv6=True`, A and C also get fd00:99::1/64 and fd00:99::2/64 (the IPv6 benchmark).
B has no addresses. Either the inline process or a kernel bridge (`bridge_bump`) joins its legs.
Names carry a per-run suffix, everything created is tracked, and `close` removes it all even
after a partial set-up; the processes it started are ended by their own pid.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

from testbed.command import CommandFailed, run_command
from testbed.inline.legs import prepare_leg

A_ADDR = "10.99.0.1"
C_ADDR = "10.99.0.2"
PREFIX_LEN = 24
A_ADDR6 = "fd00:99::1"
C_ADDR6 = "fd00:99::2"
PREFIX_LEN6 = 64


def run(command: Sequence[str], timeout_s: float = 30.0) -> str:
    """A namespace set-up command's stdout; a failure raises CommandFailed (command, stderr)."""
    return run_command(command, what="lab set-up", timeout_s=timeout_s).stdout


@dataclass
class LineLab:
    """The three namespaces. Use as a context manager; `close` is idempotent."""

    tag: str = field(default_factory=lambda: f"{os.getpid() % 100000}{secrets.token_hex(2)}")
    namespaces: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ipv6: bool = False

    @property
    def a(self) -> str:
        return f"tbtest-{self.tag}-a"

    @property
    def b(self) -> str:
        return f"tbtest-{self.tag}-b"

    @property
    def c(self) -> str:
        return f"tbtest-{self.tag}-c"

    left = "b-left"
    right = "b-right"

    def exec_prefix(self, namespace: str) -> list[str]:
        return ["ip", "netns", "exec", namespace]

    def sh(self, namespace: str, *command: str, timeout_s: float = 30.0) -> str:
        return run([*self.exec_prefix(namespace), *command], timeout_s=timeout_s)

    def build(self, prepare_offloads: bool = True) -> LineLab:
        for namespace in (self.a, self.b, self.c):
            run(["ip", "netns", "add", namespace])
            self.namespaces.append(namespace)
            self.sh(namespace, "ip", "link", "set", "lo", "up")
        run(["ip", "link", "add", "a-eth0", "netns", self.a, "type", "veth",
             "peer", "name", self.left, "netns", self.b])
        run(["ip", "link", "add", "c-eth0", "netns", self.c, "type", "veth",
             "peer", "name", self.right, "netns", self.b])
        for namespace, ifname, address in ((self.a, "a-eth0", A_ADDR),
                                           (self.c, "c-eth0", C_ADDR)):
            self.sh(namespace, "ip", "addr", "add", f"{address}/{PREFIX_LEN}", "dev", ifname)
            self.sh(namespace, "ip", "link", "set", ifname, "up")
        if self.ipv6:
            for namespace, ifname, address in ((self.a, "a-eth0", A_ADDR6),
                                               (self.c, "c-eth0", C_ADDR6)):
                self.sh(namespace, "sysctl", "-q", "-w", f"net.ipv6.conf.{ifname}.disable_ipv6=0")
                self.sh(namespace, "ip", "-6", "addr", "add", f"{address}/{PREFIX_LEN6}", "dev",
                        ifname, "nodad")
        for ifname in (self.left, self.right):
            self.sh(self.b, "sysctl", "-q", "-w", f"net.ipv6.conf.{ifname}.disable_ipv6=1")
            self.sh(self.b, "ip", "link", "set", ifname, "up")
        if prepare_offloads:
            self.prepare_all()
        return self

    def prepare_all(self) -> None:
        for namespace, ifname in ((self.a, "a-eth0"), (self.c, "c-eth0"),
                                  (self.b, self.left), (self.b, self.right)):
            prepare_leg(ifname, self.exec_prefix(namespace))

    def bridge_bump(self) -> None:
        """Join B's legs with a kernel bridge: the reference forwarder."""
        self.sh(self.b, "ip", "link", "add", "b-br", "type", "bridge")
        for ifname in (self.left, self.right):
            self.sh(self.b, "ip", "link", "set", ifname, "master", "b-br")
        self.sh(self.b, "ip", "link", "set", "b-br", "up")

    def spawn(self, namespace: str, command: Sequence[str],
              **popen_args: object) -> subprocess.Popen[bytes]:
        """Start a long-running command in `namespace`; `close` ends it if still running."""
        process = subprocess.Popen([*self.exec_prefix(namespace), *command],
                                   **popen_args)  # type: ignore[call-overload]
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
        self.processes.clear()
        for namespace in reversed(self.namespaces):
            with contextlib.suppress(CommandFailed):
                run(["ip", "netns", "del", namespace])
        self.namespaces.clear()

    def __enter__(self) -> LineLab:
        try:
            return self.build()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
