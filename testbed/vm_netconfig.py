"""A topology host's network configuration, read from its namespace and replayed in a VM.

A VM endpoint (`[[endpoints]] kernel = "6.12"`) takes over a host the runner has already
configured: addresses, routes (policy routing per source), rules, MPTCP limits and endpoints,
sysctls, the route `congctl` metric. Reading that back from the namespace, instead of computing
it a second time, keeps the runner the one source of truth: whatever it sets, the guest gets.
Parsing is pure (unit-tested); only `snapshot` runs commands.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from testbed.command import run_command

# sysctls copied into the guest when the namespace has them (the guest's kernel may lack some)
SYSCTLS = (
    "net.mptcp.enabled", "net.mptcp.checksum_enabled", "net.mptcp.allow_join_initial_addr_port",
    "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem", "net.ipv4.tcp_congestion_control",
    "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter",
    "net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6",
)
DEFAULT_RULE_PREFS = {0, 32766, 32767}  # local, main, default: every kernel has them
_ROUTE_STATE_FLAGS = {"linkdown", "dead", "offload", "trap", "rt_offload", "rt_trap"}
_SKIPPED_ROUTE_TYPES = {"local", "broadcast", "multicast", "anycast"}


@dataclass
class NetConfig:
    """Everything of a host's namespace a guest must reproduce, as `ip`/`sysctl` arguments."""

    sysctls: dict[str, str] = field(default_factory=dict)
    routes: list[list[str]] = field(default_factory=list)  # `ip route add` arguments
    rules: list[list[str]] = field(default_factory=list)  # `ip rule add` arguments
    mptcp_limits: list[str] = field(default_factory=list)  # `ip mptcp limits set` arguments
    mptcp_endpoints: list[list[str]] = field(default_factory=list)  # `ip mptcp endpoint add` arguments

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> NetConfig:
        return cls(**doc)

    def commands(self) -> list[list[str]]:
        """The guest's commands, in order: sysctls, routes, rules, MPTCP (after addresses)."""
        argvs = [["sysctl", "-q", "-w", f"{key}={value}"] for key, value in self.sysctls.items()]
        argvs += [["ip", "route", "add", *route] for route in self.routes]
        argvs += [["ip", "rule", "add", *rule] for rule in self.rules]
        if self.mptcp_limits:
            argvs.append(["ip", "mptcp", "limits", "set", *self.mptcp_limits])
        argvs.append(["ip", "mptcp", "endpoint", "flush"])
        argvs += [["ip", "mptcp", "endpoint", "add", *endpoint] for endpoint in self.mptcp_endpoints]
        return argvs


def parse_routes(text: str) -> list[list[str]]:
    """`ip -4 route show table all` -> `ip route add` arguments of the routes the runner made.

    The kernel's own routes (table local, proto kernel: they come back with the addresses) and
    state flags that are output only (linkdown) are left out."""
    routes = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0] in _SKIPPED_ROUTE_TYPES:
            continue
        if _value_after(words, "table") == "local" or _value_after(words, "proto") == "kernel":
            continue
        routes.append([w for w in words if w not in _ROUTE_STATE_FLAGS])
    return routes


def parse_rules(text: str) -> list[list[str]]:
    """`ip -4 rule show` -> `ip rule add` arguments, without the three rules every kernel has."""
    rules = []
    for line in text.splitlines():
        match = re.match(r"\s*(\d+):\s+(.*)$", line)
        if not match or int(match.group(1)) in DEFAULT_RULE_PREFS:
            continue
        rules.append(["pref", match.group(1), *match.group(2).split()])
    return rules


def parse_mptcp_limits(text: str) -> list[str]:
    """`ip mptcp limits show` ("add_addr_accepted 2 subflows 2") -> `limits set` arguments."""
    words = text.split()
    return [w for pair in zip(words[::2], words[1::2], strict=False)
            if pair[0] in ("subflows", "add_addr_accepted") for w in pair]


def parse_mptcp_endpoints(text: str) -> list[list[str]]:
    """`ip mptcp endpoint show` ("10.0.2.1 id 1 subflow dev eth1") -> `endpoint add` arguments."""
    return [line.split() for line in text.splitlines() if line.strip()]


def _value_after(words: list[str], key: str) -> str | None:
    return words[words.index(key) + 1] if key in words[:-1] else None


def snapshot(netns: str) -> NetConfig:
    """Read the namespace's configuration (before its addresses move to the guest)."""
    def show(argv: list[str]) -> str:
        return run_command(argv, netns=netns, what=f"reading {' '.join(argv[:3])} in {netns}").stdout

    sysctls = {}
    for key in SYSCTLS:
        done = run_command(["sysctl", "-n", key], netns=netns, check=False)
        if done.returncode == 0:
            sysctls[key] = " ".join(done.stdout.split())
    return NetConfig(sysctls=sysctls,
                     routes=parse_routes(show(["ip", "-4", "route", "show", "table", "all"])),
                     rules=parse_rules(show(["ip", "-4", "rule", "show"])),
                     mptcp_limits=parse_mptcp_limits(show(["ip", "mptcp", "limits", "show"])),
                     mptcp_endpoints=parse_mptcp_endpoints(show(["ip", "mptcp", "endpoint", "show"])))
