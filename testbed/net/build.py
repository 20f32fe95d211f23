"""Building a Topology for real: Mininet nodes (namespaces, no OVS, no controller), veth links,
addresses, routes and policy rules, bridges or inline processes in bumps, shaping, NAT.

Mininet supplies the namespaces (`Node`, started through mnexec) and the veth pairs (`Link`);
everything after that goes through pyroute2 and nft with checked results, and every command a
node runs is a subprocess with a checked exit code (Mininet's `cmd()` loses them). Every
namespace is given a name (`ip netns attach tb-<run>-<node>`) recorded in the run state before
use, so teardown and `testbed clean` find exactly what this run made.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from testbed.command import run_command
from testbed.errors import EnvironmentProblem, RunFailed
from testbed.inline.config import delay_entry
from testbed.interrupts import signals_held
from testbed.net.loss import NodeLoss, nft
from testbed.net.params import LinkParams
from testbed.net.readiness import wait_until_ready
from testbed.net.shaping import Backends, InterfaceShaper
from testbed.net.state import RunState, delete_netns
from testbed.net.topo import LinkSpec, NodeKind, Route, Topology

log = logging.getLogger(__name__)

OFFLOADS_OFF = ("tso", "gso", "gro", "tx")  # see testbed.inline.legs for why each one
IFA_F_NODAD = 0x02  # linux/if_addr.h: the address is usable at once, no duplicate detection
NUD_PERMANENT = 0x80  # linux/neighbour.h: a neighbour entry that never expires or re-resolves
# From this one-way delay on, a link's two ends know each other's MAC address from the start
# (pinned_neighbour_links): ARP and neighbour discovery give up after 3 probes 1 s apart, so
# across a 2 s round trip resolution fails (EHOSTUNREACH), and below it the first packet
# still waits a round trip that a real access network (a local satellite modem) does not add.
PIN_NEIGHBOURS_FROM_MS = 250.0


def pinned_neighbour_links(topo: Topology) -> list[LinkSpec]:
    """The links whose ends get permanent neighbour entries (PIN_NEIGHBOURS_FROM_MS)."""
    return [link for link in topo.links.values() if (link.params.delay_ms or 0.0) >= PIN_NEIGHBOURS_FROM_MS]


def node_sysctls(kind: NodeKind, versions: tuple[int, ...]) -> dict[str, str]:
    """The sysctls of one node: IPv6 stays disabled unless the topology carries it (and always in
    middlebox bumps, which bridge frames and own no address); where it is on, no router
    solicitations or autoconfiguration, and no duplicate address detection (addresses are also
    added nodad) so nothing waits for DAD before the first packet. keep_addr_on_down: a link
    flap (timeline `up = false`) must not flush the IPv6 addresses, as it does not the IPv4."""
    ipv6 = 6 in versions and kind is not NodeKind.MIDDLEBOX
    settings = {f"net.ipv6.conf.{scope}.disable_ipv6": "0" if ipv6 else "1" for scope in ("all", "default")}
    if ipv6:
        for scope in ("all", "default"):
            settings |= {f"net.ipv6.conf.{scope}.accept_dad": "0",
                         f"net.ipv6.conf.{scope}.keep_addr_on_down": "1",
                         f"net.ipv6.conf.{scope}.accept_ra": "0",
                         f"net.ipv6.conf.{scope}.autoconf": "0",
                         f"net.ipv6.conf.{scope}.router_solicitations": "0"}
    if kind is not NodeKind.MIDDLEBOX:
        settings |= {"net.ipv4.conf.all.rp_filter": "0", "net.ipv4.conf.default.rp_filter": "0"}
    if kind is NodeKind.ROUTER:
        settings["net.ipv4.ip_forward"] = "1"
        if ipv6:
            settings["net.ipv6.conf.all.forwarding"] = "1"
    return settings


@dataclass
class BumpRuntime:
    """What a bump runs in its inline process: middleboxes and/or a userspace delay stage.

    Bumps without one are kernel bridges.
    """

    middleboxes: list[dict[str, Any]] = field(default_factory=list)
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    seed: int = 0


@dataclass
class InlineProcess:
    node: str
    process: subprocess.Popen
    control_path: str
    stats_path: str
    log_path: str


def delay_bump(link: LinkSpec) -> str | None:
    """The bump that carries a link's userspace delay stage: its first middlebox node."""
    return link.via[0] if link.via else None


def route_arguments(ipr: IPRoute, route: Route) -> dict[str, Any]:
    """pyroute2 `route` arguments for one computed route of the topology."""
    default = "0.0.0.0/0" if route.version == 4 else "::/0"
    arguments: dict[str, Any] = {
        "oif": ipr.link_lookup(ifname=route.device)[0],
        "dst": default if route.destination == "default" else route.destination,
        "family": socket.AF_INET if route.version == 4 else socket.AF_INET6,
    }
    if route.via:
        arguments["gateway"] = route.via
    if route.table is not None:
        arguments["table"] = route.table
    return arguments


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends (they are delivered then).

    Creating a node's namespace and naming it must not be cut in half: interrupted inside
    `subprocess.run`, the runner kills `ip netns attach` and tears down at once, but a killed
    process finishes its current system call first, so the name could be mounted just after
    teardown looked for it and after the run's record was removed -- a `tb-<run>-client`
    with only `lo` and no record (issue 13). An interrupted Mininet node start likewise left
    its shell running in a namespace nothing knew of.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    try:
        # children of the block (the node's shell, `ip`) inherit no blocked mask from this
        with signals_held((signal.SIGINT, signal.SIGTERM)) as arrived:
            yield
    finally:
        for signum in dict.fromkeys(arrived):
            signal.raise_signal(signum)  # now, through the handler the runner installed


def _close_shell_pty(node: Any) -> None:
    """Close the pseudo-terminal Mininet opened for a node's shell, which Mininet never closes
    (its own comment says so): two descriptors per node per run, found by `testbed soak`."""
    from mininet.node import Node

    stdin = getattr(node, "stdin", None)
    if stdin is not None:
        with contextlib.suppress(ValueError, OSError):
            fileno = stdin.fileno()
            Node.outToNode.pop(fileno, None)
            Node.inToNode.pop(fileno, None)
        with contextlib.suppress(OSError):
            stdin.close()
    slave = getattr(node, "slave", None)
    if isinstance(slave, int):
        with contextlib.suppress(OSError):
            os.close(slave)
        node.slave = None


class Network:
    """One built topology. Use as a context manager: teardown always runs."""

    def __init__(
        self,
        topo: Topology,
        backends: Backends,
        state: RunState,
        *,
        bumps: dict[str, BumpRuntime] | None = None,
        shaped_links: set[str] | None = None,
    ) -> None:
        self.topo = topo.finalize()
        self.backends = backends
        self.state = state
        self.bumps = bumps or {}
        self.shaped_links = set(shaped_links or ()) | {
            name for name, link in self.topo.links.items() if self._needs_tree(link.params)
        }
        self.nodes: dict[str, Any] = {}  # mininet.node.Node
        self.shapers: dict[str, list[InterfaceShaper]] = {}
        self.losses: dict[str, NodeLoss] = {}
        self.inline: dict[str, InlineProcess] = {}
        self.link_params: dict[str, LinkParams] = {n: lk.params for n, lk in self.topo.links.items()}
        self.link_up: dict[str, bool] = dict.fromkeys(self.topo.links, True)
        self.timings: dict[str, float] = {}
        # what could not be undone or restored (a namespace that stayed, a route not put back
        # after a link flap): reported in the result and on stderr, never swallowed
        self.teardown_problems: list[str] = []

    @staticmethod
    def _needs_tree(params: LinkParams) -> bool:
        return params.shaped or params.delay_ms > 0 or params.jitter_ms > 0 or params.loss_pct > 0

    # --- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> Network:
        try:
            self.build()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def netns(self, node: str) -> str:
        return self.state.netns_name(node)

    def build(self) -> None:
        started = time.monotonic()
        from mininet.link import Link
        from mininet.node import Node

        for name in self.topo.nodes:
            netns = self.netns(name)
            self.state.add_netns(netns)  # recorded before it exists: clean can always find it
            with signals_deferred():  # an interrupt lands after the namespace is named (below)
                node = Node(name, inNamespace=True)
                self.nodes[name] = node
                run_command(["ip", "netns", "attach", netns, str(node.pid)],
                            what=f"naming namespace of {name}")
            # before any veth exists: Mininet brings each one up as it makes it, and a link-local
            # address made then would go through DAD (about 2 s during which this node's
            # neighbour solicitations go unsent and an IPv6 handshake loses its first SYNs)
            self._sysctl(name, node_sysctls(self.topo.nodes[name].kind, self.topo.versions))
        for link in self.topo.links.values():
            for segment in link.segments:
                Link(self.nodes[segment.left.node], self.nodes[segment.right.node],
                     intfName1=segment.left.name, intfName2=segment.right.name)
        for name, spec in self.topo.nodes.items():
            self._configure_node(name, spec.kind)
        for link in pinned_neighbour_links(self.topo):
            self._pin_neighbours(link)
        for name, spec in self.topo.nodes.items():
            if spec.nat_subnets and 4 in self.topo.versions:  # NAT44: IPv6 is routed, not translated
                self._masquerade(name, spec.nat_subnets)
        for link_name in sorted(self.shaped_links):
            self._shape(self.topo.links[link_name])
        for name, spec in self.topo.nodes.items():
            if spec.kind is NodeKind.MIDDLEBOX:
                if name in self.bumps:
                    self._start_inline(name, self.bumps[name])
                else:
                    self._bridge(name)
        self.timings["setup_s"] = time.monotonic() - started

    def teardown(self) -> None:
        if os.getpid() != self.state.runner_pid:  # a forked helper (pyroute2) must not tear down
            return
        with signals_deferred():  # Ctrl-C in the middle would leave namespaces; it lands after
            self._teardown()

    def _teardown(self) -> None:
        started = time.monotonic()
        for proc in self.inline.values():
            if proc.process.poll() is None:
                proc.process.terminate()
        for proc in self.inline.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.process.wait(timeout=3)
            if proc.process.poll() is None:
                proc.process.kill()
                self.report_problem(f"inline process on {proc.node} ignored SIGTERM for 3 s and was killed")
            elif proc.process.returncode not in (0, -signal.SIGTERM):
                self.report_problem(f"inline process on {proc.node} exited {proc.process.returncode} "
                                    f"(log: {proc.log_path})")
        for problem in delete_netns(list(self.state.netns)):
            self.report_problem(problem)
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                node.shell = None  # the shell died with its namespace; stop Mininet touching it
            _close_shell_pty(node)
        self.nodes.clear()
        self.timings["teardown_s"] = time.monotonic() - started

    # --- configuration ------------------------------------------------------------------------
    def _sysctl(self, node: str, settings: dict[str, str]) -> None:
        args = [f"{key}={value}" for key, value in settings.items()]
        run_command(["sysctl", "-q", "-w", *args], netns=self.netns(node), what=f"sysctl in {node}")

    def _configure_node(self, name: str, kind: NodeKind) -> None:
        interfaces = [i for link in self.topo.links.values() for seg in link.segments
                      for i in (seg.left, seg.right) if i.node == name]
        settings = node_sysctls(kind, self.topo.versions)
        if 6 in self.topo.versions and kind is not NodeKind.MIDDLEBOX:
            # the veths were created before the defaults changed: set their own copies too
            for iface in interfaces:
                ipv6_on = iface.address6 is not None
                settings[f"net.ipv6.conf.{iface.name}.disable_ipv6"] = "0" if ipv6_on else "1"
                if ipv6_on:
                    settings[f"net.ipv6.conf.{iface.name}.accept_dad"] = "0"
                    settings[f"net.ipv6.conf.{iface.name}.keep_addr_on_down"] = "1"
                    settings[f"net.ipv6.conf.{iface.name}.accept_ra"] = "0"
                    settings[f"net.ipv6.conf.{iface.name}.autoconf"] = "0"
        self._sysctl(name, settings)
        for iface in interfaces:
            run_command(["ethtool", "-K", iface.name, *(x for off in OFFLOADS_OFF for x in (off, "off"))],
                        netns=self.netns(name), what=f"offloads of {iface.name}")
        with IPRoute(netns=self.netns(name)) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            for iface in interfaces:
                index = ipr.link_lookup(ifname=iface.name)[0]
                for cidr in iface.addresses:
                    address, prefix = cidr.split("/")
                    if ":" in address:
                        ipr.addr("add", index=index, address=address, prefixlen=int(prefix),
                                 family=socket.AF_INET6, flags=IFA_F_NODAD)
                    else:
                        ipr.addr("add", index=index, address=address, prefixlen=int(prefix))
                ipr.link("set", index=index, state="up")
            try:
                for route in self.topo.routes.get(name, []):
                    ipr.route("replace", **route_arguments(ipr, route))
                for rule in self.topo.rules.get(name, []):
                    family, length = (socket.AF_INET, 32) if rule.version == 4 else (socket.AF_INET6, 128)
                    ipr.rule("add", family=family, src=rule.source, src_len=length, table=rule.table,
                             priority=1000)
            except NetlinkError as exc:
                raise EnvironmentProblem(f"routing in {name}: {exc}") from exc

    def _pin_neighbours(self, link: LinkSpec) -> None:
        """Permanent neighbour entries at both ends of a long-delay link, for each family."""
        ends = ((link.a, link.a_interface), (link.b, link.b_interface))
        macs = {}
        for node, iface in ends:
            with IPRoute(netns=self.netns(node)) as ipr:
                macs[node] = ipr.get_links(ipr.link_lookup(ifname=iface.name)[0])[0].get_attr("IFLA_ADDRESS")
        for (node, iface), (peer, peer_iface) in (ends, ends[::-1]):
            with IPRoute(netns=self.netns(node)) as ipr:
                index = ipr.link_lookup(ifname=iface.name)[0]
                for cidr in peer_iface.addresses:
                    address = cidr.split("/")[0]
                    family = socket.AF_INET6 if ":" in address else socket.AF_INET
                    try:
                        ipr.neigh("replace", dst=address, lladdr=macs[peer], ifindex=index,
                                  family=family, state=NUD_PERMANENT)
                    except NetlinkError as exc:
                        raise EnvironmentProblem(f"neighbour {address} on {node} {iface.name}: "
                                                 f"{exc}") from exc

    def _masquerade(self, name: str, subnets: list[str]) -> None:
        rules = "\n".join(f"add rule ip testbed_nat post ip saddr {s} ip daddr != {s} masquerade"
                          for s in subnets)
        nft(self.netns(name), "add table ip testbed_nat\n"
            "add chain ip testbed_nat post { type nat hook postrouting priority 100; }\n" + rules + "\n")

    def _bridge(self, name: str) -> None:
        legs = [i.name for link in self.topo.links.values() for seg in link.segments
                for i in (seg.left, seg.right) if i.node == name]
        with IPRoute(netns=self.netns(name)) as ipr:
            # no multicast snooping: neighbour solicitations go to solicited-node groups nobody
            # reports (no MLD querier here), and must be flooded, not filtered
            ipr.link("add", ifname="br0", kind="bridge", br_stp_state=0, br_forward_delay=0,
                     br_mcast_snooping=0)
            bridge = ipr.link_lookup(ifname="br0")[0]
            for leg in legs:
                ipr.link("set", index=ipr.link_lookup(ifname=leg)[0], master=bridge)
            ipr.link("set", index=bridge, state="up")

    def _shape(self, link: LinkSpec) -> None:
        params = self.link_params[link.name]
        shapers = []
        for iface in (link.a_interface, link.b_interface):
            shaper = InterfaceShaper(self.netns(iface.node), iface.name, self.backends)
            shaper.apply(params)
            shapers.append(shaper)
            if self.backends.loss == "nft":
                loss = self.losses.setdefault(iface.node, NodeLoss(self.netns(iface.node)))
                loss.set(iface.name, params.loss_pct)
        self.shapers[link.name] = shapers

    def _start_inline(self, name: str, runtime: BumpRuntime) -> None:
        link = self.topo.link_of_middlebox(name)
        legs = [i for seg in link.segments for i in (seg.left, seg.right) if i.node == name]
        left, right = legs[0].name, legs[1].name  # left faces link.a, the client side
        work = Path(self.state.work_dir)
        config = {"seed": runtime.seed, "middleboxes": runtime.middleboxes}
        if runtime.delay_ms or runtime.jitter_ms:
            # the whole link: the stage takes its frame limit from rate and queue, as netem
            config["delay"] = {"both": delay_entry(self.link_params[link.name])}
        config_path = work / f"{name}.inline.json"
        config_path.write_text(json.dumps(config))
        control = str(work / f"{name}.ctl")
        stats = str(work / f"{name}.stats.json")
        log_path = str(work / f"{name}.inline.log")
        with open(log_path, "w") as log_file:
            process = self.nodes[name].popen(
                [sys.executable, "-m", "testbed.inline", "--left", left, "--right", right,
                 "--control", control, "--config", str(config_path), "--stats-out", stats,
                 "--no-prepare"],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        self.inline[name] = InlineProcess(name, process, control, stats, log_path)
        # as long as it takes while the process works (a TCG guest needs tens of seconds)
        started = time.monotonic()
        problem = wait_until_ready(process, Path(control).exists)
        waited = time.monotonic() - started
        self.timings["inline_start_s"] = max(self.timings.get("inline_start_s", 0.0), waited)
        if problem is not None:
            raise RunFailed(f"inline process on {name} did not start ({problem.text()}): "
                            f"{Path(log_path).read_text().strip()[-500:]}")

    # --- live changes -------------------------------------------------------------------------
    def change_link(self, name: str, changes: dict[str, Any]) -> LinkParams:
        """Change a link's parameters while traffic flows; returns the new full parameter set."""
        from testbed.inline.control import InlineControl

        if name not in self.topo.links:
            raise RunFailed(f"no link {name!r} (links: {', '.join(self.topo.links)})")
        link = self.topo.links[name]
        new = self.link_params[name].updated(changes, where=f"link {name}")
        if name not in self.shapers:
            raise RunFailed(f"link {name} was built without a shaping tree; "
                            "the runner must declare it shaped before building")
        for shaper in self.shapers[name]:
            shaper.change(new)
            if self.backends.loss == "nft":
                self.losses[self._node_of(shaper)].set(shaper.ifname, new.loss_pct)
        if not self.backends.netem and delay_entry(new) != delay_entry(self.link_params[name]):
            bump = delay_bump(link)
            if bump is None or bump not in self.inline:
                raise RunFailed(f"link {name}: no userspace delay stage was built for it")
            InlineControl(self.inline[bump].control_path).set_delay(
                new.delay_ms, new.jitter_ms, rate_mbit=new.rate_mbit, queue_pkts=new.queue_pkts)
        self.link_params[name] = new
        return new

    def set_middlebox_active(self, node: str, index: int, active: bool) -> dict[str, int]:
        """Switch the index-th middlebox of a bump on or off (built switchable: the runner marks
        the boxes its timeline names); the box's counters at that moment."""
        from testbed.inline.control import InlineControl, InlineControlError

        if node not in self.inline:
            raise RunFailed(f"no inline process on {node} to switch middlebox {index} in")
        try:
            return InlineControl(self.inline[node].control_path).set_middlebox_active(index, active)
        except InlineControlError as exc:
            raise RunFailed(f"middlebox {node}.{index}: {exc}") from exc

    def _node_of(self, shaper: InterfaceShaper) -> str:
        return shaper.ifname.rsplit("-eth", 1)[0]

    def set_link_up(self, name: str, up: bool) -> None:
        """Take a link's interfaces down or up at both ends (a link flap)."""
        link = self.topo.links[name]
        for iface in (link.a_interface, link.b_interface):
            with IPRoute(netns=self.netns(iface.node)) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname=iface.name)[0],
                         state="up" if up else "down")
        if up:  # interface down flushed its routes: put them back
            for node in (link.a, link.b):
                self._restore_routes(node)
        self.link_up[name] = up

    def _restore_routes(self, node: str) -> None:
        with IPRoute(netns=self.netns(node)) as ipr:
            for route in self.topo.routes.get(node, []):
                try:
                    ipr.route("replace", **route_arguments(ipr, route))
                except NetlinkError as exc:
                    self.report_problem(f"route {route.destination} via {route.via or route.device} in "
                                        f"{node} not restored after the link came up: {exc}")

    def report_problem(self, problem: str) -> None:
        """Record something this run could not undo or restore, and say it on stderr now."""
        self.teardown_problems.append(problem)
        print(f"testbed: {problem}", file=sys.stderr)

    # --- running things in nodes --------------------------------------------------------------
    def popen(self, node: str, args: list[str], **kwargs: Any) -> subprocess.Popen:
        """Start a program inside a node (mnexec -da PID, Mininet's attach)."""
        return self.nodes[node].popen(args, **kwargs)

    def node_pid(self, node: str) -> int:
        return int(self.nodes[node].pid)

    def inline_stats(self) -> dict[str, Any]:
        from testbed.inline.control import InlineControl, InlineControlError

        out = {}
        for name, proc in self.inline.items():
            try:
                out[name] = InlineControl(proc.control_path).stats()
            except InlineControlError as exc:
                out[name] = {"error": str(exc)}
        return out
