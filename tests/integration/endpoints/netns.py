"""Two network namespaces joined by two veth paths, for real-kernel endpoint tests.

    client ns                           server ns
    c1 10.98.1.1/24  <--- veth --->  s1 10.98.1.2/24
    c2 10.98.2.1/24  <--- veth --->  s2 10.98.2.2/24

The client has per-source policy routing (from 10.98.N.1 lookup table 100+N, default via
10.98.N.2), MPTCP limits of 2 subflows / 2 accepted ADD_ADDRs and a "subflow" endpoint on
10.98.2.1, so a connection to 10.98.1.2 opens a second subflow over the second path. Each
veth end is rate-limited with TBF so transfers last long enough to be sampled.

Everything is created under unique names and removed by ``close`` (deleting a namespace
deletes its veth ends); processes started through ``spawn`` are killed by their Popen
handle, never by name.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pyroute2 import IPRoute

REPO_ROOT = Path(__file__).resolve().parents[3]
CLIENT_ADDRESSES = ("10.98.1.1", "10.98.2.1")
SERVER_ADDRESSES = ("10.98.1.2", "10.98.2.2")
PATH_RATE = "200mbit"


def run_checked(*command: str) -> str:
    """Run a command; raise with its stderr if it fails."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(
            f"command failed ({result.returncode}): {' '.join(command)}\n{result.stderr.strip()}"
        )
    return result.stdout


@dataclass
class EndpointRun:
    """A finished endpoint process: exit code, stdout lines, stderr."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def last_json(self) -> dict[str, object]:
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        if not lines:
            raise AssertionError(f"no stdout; stderr:\n{self.stderr}")
        data: dict[str, object] = json.loads(lines[-1])
        return data


@dataclass
class TwoPathNet:
    """The namespaces of one test; ``close`` removes them and any process still running."""

    tag: str
    rate: str | None = PATH_RATE  # TBF rate on every veth end; None leaves the paths unshaped
    client_ns: str = field(init=False)
    server_ns: str = field(init=False)
    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    created: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client_ns = f"tbep-{self.tag}-c"
        self.server_ns = f"tbep-{self.tag}-s"

    def build(self) -> None:
        for ns in (self.client_ns, self.server_ns):
            run_checked("ip", "netns", "add", ns)
            self.created.append(ns)
        for path in (1, 2):
            client_if, server_if = f"tbep{self.tag}c{path}", f"tbep{self.tag}s{path}"
            run_checked(
                "ip", "link", "add", client_if, "netns", self.client_ns,
                "type", "veth", "peer", "name", server_if, "netns", self.server_ns,
            )  # fmt: skip
            for ns, ifname, address in (
                (self.client_ns, client_if, CLIENT_ADDRESSES[path - 1]),
                (self.server_ns, server_if, SERVER_ADDRESSES[path - 1]),
            ):
                run_checked("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", ifname)
                run_checked("ip", "-n", ns, "link", "set", ifname, "up")
                if self.rate is not None:
                    with IPRoute(netns=ns) as ipr:
                        index = ipr.link_lookup(ifname=ifname)[0]
                        ipr.tc("add", "tbf", index, rate=self.rate, burst=64000, latency="20ms")
            table = str(100 + path)
            source = CLIENT_ADDRESSES[path - 1]
            gateway = SERVER_ADDRESSES[path - 1]
            run_checked("ip", "-n", self.client_ns, "rule", "add", "from", source, "table", table)
            run_checked(
                "ip", "-n", self.client_ns, "route", "add", "default",
                "via", gateway, "dev", client_if, "table", table,
            )  # fmt: skip
        for ns in (self.client_ns, self.server_ns):
            run_checked("ip", "-n", ns, "link", "set", "lo", "up")
            run_checked(
                "ip", "-n", ns, "mptcp", "limits", "set", "subflows", "2", "add_addr_accepted", "2"
            )  # fmt: skip
        run_checked(
            "ip", "-n", self.client_ns, "mptcp", "endpoint", "add", CLIENT_ADDRESSES[1],
            "dev", f"tbep{self.tag}c2", "subflow",
        )  # fmt: skip

    def sysctl(self, ns: str, key: str, value: str) -> None:
        run_checked("ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{key}={value}")

    def _command(self, ns: str, role: str, args: tuple[str, ...]) -> list[str]:
        return [
            "ip", "netns", "exec", ns, sys.executable, "-m", "testbed.endpoints.kernel", role, *args
        ]  # fmt: skip

    def _popen(self, command: list[str]) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
            env=env,
        )
        self.processes.append(process)
        return process

    def start_server(self, *args: str, wait_listening: bool = True) -> ServerHandle:
        """Start a server in the server namespace; waits for its listening line."""
        process = self._popen(self._command(self.server_ns, "server", args))
        handle = ServerHandle(process)
        if wait_listening:
            handle.wait_listening(timeout=10.0)
        return handle

    def run_client(self, *args: str, timeout: float = 30.0) -> EndpointRun:
        process = self._popen(self._command(self.client_ns, "client", args))
        stdout, stderr = process.communicate(timeout=timeout)
        return EndpointRun(process.returncode, stdout, stderr)

    def spawn(self, ns: str, *command: str) -> subprocess.Popen[str]:
        """Any program in a namespace (a peer that is not a testbed endpoint)."""
        return self._popen(["ip", "netns", "exec", ns, *command])

    def start_client(self, *args: str) -> subprocess.Popen[str]:
        return self._popen(self._command(self.client_ns, "client", args))

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=10)
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self.created.clear()


class ServerHandle:
    """A running server process: its listening line, then its result."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.listening: dict[str, object] | None = None
        self._first_line = ""

    @property
    def port(self) -> int:
        assert self.listening is not None, "server has not reported listening"
        return int(str(self.listening["address"]).rsplit(":", 1)[1])

    def wait_listening(self, timeout: float) -> None:
        """Read the first stdout line straight from the pipe (nothing is left buffered)."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        received = b""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in received and time.monotonic() < deadline:
                if selector.select(timeout=max(deadline - time.monotonic(), 0.0)):
                    chunk = os.read(fd, 4096)
                    if not chunk:
                        break
                    received += chunk
        if b"\n" not in received:
            self.process.kill()
            _out, err = self.process.communicate(timeout=10)
            raise AssertionError(f"server did not report listening within {timeout} s:\n{err}")
        self._first_line = received.decode()
        self.listening = json.loads(received.split(b"\n", 1)[0])
        assert self.listening["event"] == "listening", received

    def result(self, timeout: float = 30.0) -> EndpointRun:
        stdout, stderr = self.process.communicate(timeout=timeout)
        return EndpointRun(self.process.returncode, self._first_line + stdout, stderr)
