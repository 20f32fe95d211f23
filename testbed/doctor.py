"""`testbed doctor`: what this machine can do, found by trying it in a scratch namespace.

Nothing is read from kernel config files: each capability is exercised (a qdisc added, a
socket opened, an nft rule loaded) in a throwaway namespace recorded as a run of its own
(`tb-<id>-doctor`), so `testbed clean` removes it after a crash and leaves it alone while the
doctor lives (another job's clean once deleted it mid-probe). The result decides the
backend of each link parameter, and is recorded in every result file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from testbed.command import run_command
from testbed.errors import SpecError
from testbed.mptcp.native import STATE as STACK_CORE
from testbed.net.shaping import Backends
from testbed.net.state import RunState, delete_netns
from testbed.wire.checksum import CHECKSUM_IMPLEMENTATION

# `TESTBED_EMULATION=no-netem` makes a machine that has netem emulate delay and loss as one
# without it does (the userspace delay stage, the nft loss rule): the two emulations can then be
# compared on one kernel and one CPU (docs/link-emulation.md)
EMULATION_ENV = "TESTBED_EMULATION"
EMULATION_CHOICES = ("auto", "no-netem")

MPTCP_SOCKET_PROBE = (
    "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262); s.close()"
)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    essential: bool = True


@dataclass
class DoctorReport:
    checks: list[Check] = field(default_factory=list)
    backends: Backends | None = None

    def add(self, name: str, ok: bool, detail: str, essential: bool = True) -> bool:
        self.checks.append(Check(name, ok, detail, essential))
        return ok

    def ok(self, name: str) -> bool:
        return any(c.name == name and c.ok for c in self.checks)

    @property
    def problems(self) -> list[Check]:
        return [c for c in self.checks if c.essential and not c.ok]

    def as_dict(self) -> dict[str, Any]:
        return {
            "root": self.ok("root"),
            "mnexec": self.ok("mnexec"),
            "mininet": self.ok("mininet"),
            "mptcp": self.ok("mptcp"),
            "htb": self.ok("htb"),
            "tbf": self.ok("tbf"),
            "netem": self.ok("netem"),
            "nftables": self.ok("nftables"),
            "tshark": self.ok("tshark"),
            "backends": self.backends.as_dict() if self.backends else None,
            "checks": [c.__dict__ for c in self.checks],
            "kernel": os.uname().release,
            "python": sys.version.split()[0],
            "ok": not self.problems,
        }


def _run(command: list[str], *, input: str | None = None) -> subprocess.CompletedProcess:
    """A probe: its failure is the finding, so the exit status is returned, not raised."""
    return run_command(command, check=False, input=input)


def _first_line(done: subprocess.CompletedProcess) -> str:
    text = (done.stderr or done.stdout).strip()
    return text.splitlines()[0] if text else f"exit {done.returncode}"


def _probe_qdisc(netns: str, kind: str, **params: Any) -> tuple[bool, str]:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        with IPRoute(netns=netns) as ipr:
            index = ipr.link_lookup(ifname="probe0")[0]
            ipr.tc("add", kind, index, 0x10000, **params)
            ipr.tc("del", index=index, handle=0x10000, parent=0xFFFFFFFF)  # root
        return True, f"{kind} qdisc added and removed"
    except NetlinkError as exc:
        return False, f"kernel refused {kind}: {exc} (module sch_{kind} missing?)"
    except Exception as exc:  # pyroute2 raising something else is itself the finding
        return False, f"probing {kind} failed: {type(exc).__name__}: {exc}"


def emulation_choice() -> str:
    """The link emulation asked for in the environment: `auto` (netem where it works) or
    `no-netem`; anything else is a one-line error."""
    choice = os.environ.get(EMULATION_ENV, "auto").strip() or "auto"
    if choice not in EMULATION_CHOICES:
        raise SpecError(f"{EMULATION_ENV}={choice!r}: expected one of "
                        f"{', '.join(EMULATION_CHOICES)} (unset it for auto)")
    return choice


def run_doctor() -> DoctorReport:
    emulation = emulation_choice()  # a bad value stops here, before any namespace exists
    report = DoctorReport()
    root = report.add("root", os.geteuid() == 0,
                      "running as root" if os.geteuid() == 0 else
                      "not root: namespaces, tc and nftables need root (use sudo)")
    mnexec = shutil.which("mnexec")
    if mnexec:
        done = _run([mnexec, "-v"])
        report.add("mnexec", True, f"{mnexec} {done.stdout.strip()}")
    else:
        report.add("mnexec", False, "mnexec not found: install Debian's `mininet` package (make setup)")
    try:
        import mininet.node  # noqa: F401

        report.add("mininet", True, "mininet Python package imports")
    except Exception as exc:  # any import failure is the finding itself
        report.add("mininet", False, f"cannot import mininet: {exc} (make setup)")
    tshark = shutil.which("tshark")
    if tshark:
        version = _run([tshark, "-v"]).stdout.strip().splitlines()
        report.add("tshark", True, version[0] if version else tshark, essential=False)
    else:
        report.add("tshark", False, "tshark not found: wire validation disabled (make setup)",
                   essential=False)
    report.add("checksum", CHECKSUM_IMPLEMENTATION == "c",
               "C one's-complement sum built (testbed/wire/_checksum.c)" if CHECKSUM_IMPLEMENTATION == "c"
               else "testbed/wire/_checksum.c not built: checksums in Python, the python stack and "
                    "the inline boxes run slower (make setup builds it)", essential=False)
    report.add("stack core", STACK_CORE.compiled,
               STACK_CORE.describe() + ("" if STACK_CORE.compiled else
                                        ": the python stack's core about half as fast"),
               essential=False)
    for tool, package in (("ethtool", "ethtool"), ("nft", "nftables"), ("iperf3", "iperf3"),
                          ("ping", "iputils-ping")):
        found = shutil.which(tool)
        report.add(f"tool:{tool}", bool(found), found or f"{tool} not found: install {package}",
                   essential=tool in ("ethtool", "nft"))
    if not root:
        report.add("mptcp", False, "not probed: needs root")
        return report

    # recorded as a run of its own, so a concurrent `testbed clean` sees its runner alive and
    # leaves the namespace alone, and a later one removes it after a crash
    state = RunState.create()
    netns = state.netns_name("doctor")
    state.add_netns(netns)
    try:
        done = _run(["ip", "netns", "add", netns])
        if done.returncode != 0:
            report.add("netns", False, f"cannot create a network namespace: {_first_line(done)}")
            return report
        report.add("netns", True, "network namespace created")
        veth = _run(["ip", "-n", netns, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1"])
        report.add("veth", veth.returncode == 0, "veth pair created" if veth.returncode == 0
                   else _first_line(veth))
        _run(["ip", "-n", netns, "link", "set", "probe0", "up"])

        enabled = _run(["ip", "netns", "exec", netns, "sysctl", "-n", "net.mptcp.enabled"])
        sock = _run(["ip", "netns", "exec", netns, sys.executable, "-c", MPTCP_SOCKET_PROBE])
        if enabled.returncode != 0:
            report.add("mptcp", False, "kernel has no MPTCP (no net.mptcp sysctls): need CONFIG_MPTCP=y")
        elif enabled.stdout.strip() != "1":
            report.add("mptcp", False, "net.mptcp.enabled is 0 in new namespaces: "
                       "sysctl -w net.mptcp.enabled=1")
        elif sock.returncode != 0:
            report.add("mptcp", False, f"IPPROTO_MPTCP socket refused: {_first_line(sock)}")
        else:
            report.add("mptcp", True, "IPPROTO_MPTCP socket opened, net.mptcp.enabled=1")
        limits = _run(["ip", "-n", netns, "mptcp", "limits", "show"])
        report.add("ip-mptcp", limits.returncode == 0,
                   limits.stdout.strip() if limits.returncode == 0 else
                   f"`ip mptcp` failed: {_first_line(limits)} (iproute2 too old?)")

        htb_ok, htb_detail = _probe_qdisc(netns, "htb", default=0x1)
        report.add("htb", htb_ok, htb_detail, essential=False)
        tbf_ok, tbf_detail = _probe_qdisc(netns, "tbf", rate=12_500_000, burst=15000, latency=50_000)
        report.add("tbf", tbf_ok, tbf_detail, essential=False)
        netem_ok, netem_detail = _probe_qdisc(netns, "netem", delay=1000)
        report.add("netem", netem_ok, netem_detail, essential=False)
        if netem_ok and emulation == "no-netem":
            netem_ok = False
            report.add("emulation", True, f"netem works but is not used ({EMULATION_ENV}=no-netem): "
                       "delay in the userspace stage, loss by nftables", essential=False)
        rule = ("add table inet tbprobe\n"
                "add chain inet tbprobe c { type filter hook postrouting priority 0; }\n"
                "add rule inet tbprobe c numgen random mod 1000000 < 10000 counter drop\n")
        nft_done = _run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=rule)
        nft_ok = report.add("nftables", nft_done.returncode == 0,
                            "numgen random drop rule loaded" if nft_done.returncode == 0
                            else f"nft refused a numgen drop rule: {_first_line(nft_done)}",
                            essential=False)
        af_packet = _run(["ip", "netns", "exec", netns, sys.executable, "-c",
                          "import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()"])
        report.add("af_packet", af_packet.returncode == 0,
                   "AF_PACKET socket opened" if af_packet.returncode == 0 else _first_line(af_packet),
                   essential=not netem_ok)

        rate = "htb" if htb_ok else "tbf" if tbf_ok else ""
        loss = "netem" if netem_ok else "nft" if nft_ok else ""
        delay = "netem" if netem_ok else "userspace"
        report.add("backend:rate", bool(rate), rate or "neither HTB nor TBF works: no rate shaping")
        report.add("backend:loss", bool(loss), loss or "neither netem nor nftables numgen works: no loss")
        if rate and loss:
            report.backends = Backends(rate=rate, loss=loss, delay=delay)
    finally:
        delete_netns([netns])
        state.remove()
    return report


def format_report(report: DoctorReport) -> str:
    lines = []
    for check in report.checks:
        mark = "ok  " if check.ok else ("FAIL" if check.essential else "warn")
        lines.append(f"[{mark}] {check.name:<14} {check.detail}")
    if report.backends:
        b = report.backends
        lines.append(f"backends: rate={b.rate} loss={b.loss} delay={b.delay}")
    if report.problems:
        lines.append("essential problems: " + "; ".join(f"{c.name}: {c.detail}" for c in report.problems))
    return "\n".join(lines)
