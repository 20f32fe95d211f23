"""Namespaces for the translator tests: kernel MPTCP hosts, a router, and inline bumps running
the nptv6 / nat64 boxes (`python -m testbed.inline`), built by hand because the runner's
topologies do not route translated prefixes yet. Everything created is removed by `close`, the
processes by their own pid; namespace names follow testbed.inline.lab's pattern so `testbed
clean` finds leftovers.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from testbed.command import run_command
from testbed.inline.control import InlineControl
from testbed.inline.legs import prepare_leg

HERE = Path(__file__).parent
PEER = str(HERE / "mptcp_peer.py")


def _tag() -> str:
    return f"{os.getpid() % 100000}{secrets.token_hex(2)}"


class TranslatorLab:
    """Up to six namespaces named by role; use as a context manager."""

    def __init__(self, roles: list[str], scratch: Path) -> None:
        assert len(roles) <= 6
        tags = [_tag(), _tag()]
        self.ns = {role: f"tbtest-{tags[i // 3]}-{'abc'[i % 3]}" for i, role in enumerate(roles)}
        self.scratch = scratch
        self.created: list[str] = []
        self.processes: list[subprocess.Popen[str]] = []
        self.bump_stats: dict[str, Path] = {}

    def __enter__(self) -> TranslatorLab:
        try:
            for name in self.ns.values():
                run_command(["ip", "netns", "add", name], what="translator lab set-up")
                self.created.append(name)
            for role in self.ns:
                self.sh(role, "ip", "link", "set", "lo", "up")
                self.sh(role, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                        "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.default.accept_ra=0")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sh(self, role: str, *argv: str) -> str:
        return run_command(["ip", "netns", "exec", self.ns[role], *argv],
                           what=f"translator lab: {' '.join(argv[:3])} in {role}").stdout

    def veth(self, role_a: str, if_a: str, role_b: str, if_b: str) -> None:
        run_command(["ip", "-n", self.ns[role_a], "link", "add", if_a, "type", "veth", "peer",
                     "name", if_b, "netns", self.ns[role_b]], what="translator lab veth")
        for role, name in ((role_a, if_a), (role_b, if_b)):
            prepare_leg(name, ["ip", "netns", "exec", self.ns[role]])
            self.sh(role, "ip", "link", "set", name, "up")

    def spawn(self, role: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        process = subprocess.Popen(["ip", "netns", "exec", self.ns[role], *argv], text=True,
                                   **kwargs)
        self.processes.append(process)
        return process

    def start_bump(self, role: str, left: str, right: str, boxes: list[dict[str, Any]]) -> None:
        """The inline process on a bump namespace's legs (left toward the client)."""
        config = self.scratch / f"{role}.json"
        config.write_text(json.dumps({"seed": 1, "middleboxes": boxes}))
        control = self.scratch / f"{role}.sock"
        stats = self.scratch / f"{role}.stats.json"
        self.bump_stats[role] = stats
        log = (self.scratch / f"{role}.log").open("w")
        self.spawn(role, [sys.executable, "-m", "testbed.inline", "--left", left, "--right",
                          right, "--control", str(control), "--config", str(config),
                          "--stats-out", str(stats), "--no-prepare"], stderr=log)
        InlineControl(str(control)).wait_ready(timeout_s=10)

    def mptcp_counters(self, role: str) -> dict[str, int]:
        """The namespace's MPTcpExt counters (/proc/net/netstat is per namespace)."""
        lines = [line.split() for line in self.sh(role, "cat", "/proc/net/netstat").splitlines()
                 if line.startswith("MPTcpExt:")]
        return {name: int(value) for name, value in zip(lines[0][1:], lines[1][1:], strict=True)}

    def tcp_counter(self, role: str, name: str) -> int:
        """One Tcp: counter of /proc/net/snmp in the namespace (OutRsts, ...)."""
        lines = [line.split() for line in self.sh(role, "cat", "/proc/net/snmp").splitlines()
                 if line.startswith("Tcp:")]
        return int(dict(zip(lines[0][1:], lines[1][1:], strict=True))[name])

    def established(self, role: str, port: int) -> list[tuple[str, str]]:
        """(local, peer) of the TCP connections (MPTCP subflows) established on `port`."""
        out = self.sh(role, "ss", "-tnH", "state", "established", f"( sport = :{port} )")
        return [(fields[-2], fields[-1]) for fields in (line.split() for line in out.splitlines())
                if len(fields) >= 2]

    def stop_bumps(self) -> dict[str, Any]:
        """End the bumps (SIGTERM, by pid) and read what each wrote on exit."""
        for process in self.processes:
            if process.poll() is None and "testbed.inline" in process.args:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=10)
        return {role: json.loads(path.read_text()) for role, path in self.bump_stats.items()
                if path.exists()}

    def run_connection(self, server_family: str, dial: str, port: int, count: int,
                       hold_s: float, bind: str = "") -> dict[str, Any]:
        """One MPTCP upload client -> server; the server's subflows sampled until the hold ends."""
        server = self.spawn("server", [sys.executable, PEER, "server", server_family, str(port)],
                            stdout=subprocess.PIPE)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        client = self.spawn("client", [sys.executable, PEER, "client", dial, str(port), str(count),
                                       str(hold_s), *([bind] if bind else [])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # every subflow seen established while the client holds the connection open (a join
        # that comes late under load still counts; the client is still sending at the end)
        subflows: set[tuple[str, str]] = set()
        deadline = time.monotonic() + hold_s
        while time.monotonic() < deadline and client.poll() is None:
            subflows.update(self.established("server", port))
            time.sleep(0.2)
        client_out, client_err = client.communicate(timeout=60)
        server_out, _ = server.communicate(timeout=60)
        return {"subflows": sorted(subflows), "client": client_out.strip(),
                "client_error": client_err.strip(), "received": server_out.strip()}

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()
        self.processes.clear()
        for name in reversed(self.created):
            run_command(["ip", "netns", "del", name], check=False)
        self.created.clear()
