"""One bulk transfer between two bundled-stack hosts over N simulated paths, classified.

This is what `testbed stack sim` and the scenario tests run. By default the network is

    client --path1 (10.0.1.1)--+
    client --path2 (10.0.2.1)--+-- r --core-- server (10.0.100.2)

where each path is an access link shaped by its own LinkParams, with optional middleboxes on
it, and the core link is unshaped, so the paths are the bottlenecks (as in
topologies/two_path). Alternatively a named testbed topology is used as it is (its client and
server hosts, its links as paths). The client connects from its first address; the path
manager opens further subflows. The payload is drawn from the seed; the receiver checks every
byte, and the result carries the outcome class of DESIGN.md with its evidence.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from middleboxes.contract import Middlebox
from testbed.mptcp.config import StackConfig
from testbed.net.params import LinkParams
from testbed.sim.apps import BulkReceiver, BulkSender, HostDriver
from testbed.sim.network import SimNetwork
from testbed.sim.rng import derive_rng
from testbed.sim.stats import FlowKey
from testbed.sim.topology import network_from_topology

if TYPE_CHECKING:
    from testbed.net.topo import Topology

OUTCOMES = ("mptcp", "fallback-syn", "fallback-infinite-map", "mp-fail", "subflow-rejected",
            "reset", "stalled", "corrupted")
SERVER_ADDRESS = "10.0.100.2"
SERVER_PORT = 5201
CORE_LINK = "core"


def client_address(path_index: int) -> str:
    """Address of the client on path `path_index` (0-based), as in topologies/two_path."""
    return f"10.0.{path_index + 1}.1"


def path_name(path_index: int) -> str:
    return f"path{path_index + 1}"


@dataclass
class PathSpec:
    """One access path: shaping per direction and the middleboxes on it (client side first)."""

    upstream: LinkParams = field(default_factory=LinkParams)
    downstream: LinkParams | None = None
    middleboxes: Sequence[Middlebox] = ()


@dataclass
class TimelineStep:
    """At virtual `time`, on link `path` ("path1", "core", or a topology's link name): cut,
    restore, or "set" = change the LinkParams fields in `changes` (both directions), keeping
    the other fields as they are at that time."""

    time: float
    path: str
    action: str  # "cut" | "restore" | "set"
    changes: dict[str, object] | None = None


@dataclass
class TransferSpec:
    """What to run. Give either `paths` (the built-in network) or `topology` (a finalized
    testbed topology; `topology_middleboxes` then places middleboxes by bump node name, e.g.
    "mb_a", or by link name)."""

    paths: list[PathSpec] = field(default_factory=list)
    size: int = 200_000
    seed: int = 1
    client_config: StackConfig = field(default_factory=StackConfig)
    server_config: StackConfig = field(default_factory=StackConfig)
    codec: bool = True
    time_limit: float = 60.0
    timeline: list[TimelineStep] = field(default_factory=list)
    server_port: int = SERVER_PORT
    topology: Topology | None = None
    topology_middleboxes: dict[str, Sequence[Middlebox]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.topology is None) == (not self.paths):
            raise ValueError("TransferSpec: give either paths or a topology (exactly one)")
        if self.topology_middleboxes and self.topology is None:
            raise ValueError("TransferSpec.topology_middleboxes: only with a topology")
        if self.size < 0:
            raise ValueError(f"TransferSpec.size: must be >= 0, got {self.size}")
        if not self.time_limit > 0:
            raise ValueError(f"TransferSpec.time_limit: must be > 0, got {self.time_limit}")
        names = set(self.link_names())
        for step in self.timeline:
            if step.path not in names:
                raise ValueError(f"timeline: no link named {step.path!r}; links: {sorted(names)}")
            if step.action not in ("cut", "restore", "set"):
                raise ValueError(f"timeline: action {step.action!r} is not cut, restore or set")
            if (step.action == "set") != bool(step.changes):
                raise ValueError("timeline: 'set' needs changes, cut/restore take none")
            if step.changes:
                LinkParams().updated(step.changes)

    def describe(self) -> dict[str, object]:
        """The inputs as plain data, so a printed result says what produced it."""
        def config(stack: StackConfig) -> dict[str, object]:
            return {"mptcp_enabled": stack.mptcp_enabled, "checksum": stack.checksum,
                    "congestion_control": stack.congestion_control,
                    "scheduler": stack.scheduler, "path_manager": stack.path_manager}

        described: dict[str, object] = {
            "size": self.size, "seed": self.seed, "codec": self.codec,
            "time_limit_s": self.time_limit,
            "client": config(self.client_config), "server": config(self.server_config),
            "timeline": [{"time": step.time, "link": step.path, "action": step.action,
                          **({"changes": dict(step.changes)} if step.changes else {})}
                         for step in self.timeline],
        }
        if self.topology is None:
            described["paths"] = {
                path_name(i): {"upstream": asdict(path.upstream),
                               "downstream": asdict(path.downstream or path.upstream),
                               "middleboxes": [box.name for box in path.middleboxes]}
                for i, path in enumerate(self.paths)}
        else:
            described["topology"] = self.topology.describe()
            described["middleboxes"] = {name: [box.name for box in boxes]
                                        for name, boxes in self.topology_middleboxes.items()}
        return described

    def path_names(self) -> list[str]:
        """The client's access links, in the order of the client's addresses."""
        if self.topology is None:
            return [path_name(i) for i in range(len(self.paths))]
        client = self.topology.finalize().client
        return [link.name for link, _iface, _peer in self.topology.l3_interfaces(client)]

    def link_names(self) -> list[str]:
        if self.topology is None:
            return [*self.path_names(), CORE_LINK]
        return list(self.topology.finalize().links)


@dataclass
class SubflowBytes:
    """Payload bytes that crossed one subflow in the data direction."""

    flow: str
    path: str
    bytes: int

    def as_dict(self) -> dict[str, object]:
        return {"flow": self.flow, "path": self.path, "bytes": self.bytes}


@dataclass
class TransferResult:
    """How one transfer went: outcome class, integrity, timing, per-subflow bytes, and the
    evidence (each side's events and stack statistics, the network's counters)."""

    outcome: str
    complete: bool
    size: int
    received: int
    first_mismatch: int | None
    payload_sha256: str
    received_sha256: str
    duration: float
    goodput_mbit: float
    stop_reason: str
    subflows: list[SubflowBytes]
    client_events: dict[str, object]
    server_events: dict[str, object]
    client_stats: Any
    server_stats: Any
    network: SimNetwork
    server_address: str = SERVER_ADDRESS
    spec: TransferSpec | None = None

    @property
    def hash_ok(self) -> bool:
        return self.complete and self.payload_sha256 == self.received_sha256

    def bytes_on_path(self, name: str) -> int:
        return sum(subflow.bytes for subflow in self.subflows if subflow.path == name)

    def summary(self) -> dict[str, object]:
        """Plain data for JSON: what the CLI prints."""
        return {
            "spec": self.spec.describe() if self.spec is not None else None,
            "outcome": self.outcome,
            "complete": self.complete,
            "size": self.size,
            "received": self.received,
            "payload_sha256": self.payload_sha256,
            "received_sha256": self.received_sha256,
            "hash_ok": self.hash_ok,
            "first_corrupted_byte": self.first_mismatch,
            "virtual_duration_s": round(self.duration, 6),
            "goodput_mbit": round(self.goodput_mbit, 3),
            "stop_reason": self.stop_reason,
            "subflows": [subflow.as_dict() for subflow in self.subflows],
            "client": self.client_events,
            "server": self.server_events,
            "client_stats": _plain(self.client_stats),
            "server_stats": _plain(self.server_stats),
            "counters": self.network.counters(),
        }


def _plain(value: Any) -> Any:
    """Stats objects as JSON-friendly data (dataclasses and objects with as_dict)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "as_dict"):
        return _plain(value.as_dict())
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if hasattr(value, "__dataclass_fields__"):
        return {name: _plain(getattr(value, name)) for name in value.__dataclass_fields__}
    return repr(value)


# --- the stack seam: the only place that knows how MptcpHost is built and driven -----------
def make_host(name: str, addresses: list[str], config: StackConfig, seed: int) -> Any:
    from testbed.mptcp.host import MptcpHost

    return MptcpHost(addresses=addresses, config=config, rng=derive_rng(seed, f"host/{name}"),
                     now=0.0)


def open_connection(host: Any, local_address: str, remote_address: str, port: int,
                    now: float) -> Any:
    return host.connect(remote_address, port, now=now, local_address=local_address)


def connection_outcome(connection: Any) -> str:
    """The stack's own view of the connection (mptcp, fallback-syn, mp-fail, ...)."""
    return str(connection.outcome())


def connection_stats(connection: Any) -> Any:
    return None if connection is None else connection.stats()


# --- running ------------------------------------------------------------------------------
@dataclass
class TransferSetup:
    """A built, not yet run, transfer: tests may add actions before `finish` runs it."""

    spec: TransferSpec
    network: SimNetwork
    client: HostDriver
    server: HostDriver
    sender: BulkSender
    receiver: BulkReceiver
    payload: bytes
    server_address: str = SERVER_ADDRESS
    path_of: dict[str, str] = field(default_factory=dict)


def _built_in_network(spec: TransferSpec, client: HostDriver, server: HostDriver,
                      client_addresses: list[str]) -> SimNetwork:
    network = SimNetwork(spec.seed, codec=spec.codec)
    client_node = network.add_endpoint("client", client)
    server_node = network.add_endpoint("server", server)
    router = network.add_router("r")
    for index, path in enumerate(spec.paths):
        network.add_link(path_name(index), client_node, router, path.upstream,
                         path.downstream, a_address=client_addresses[index],
                         middleboxes=path.middleboxes)
    network.add_link(CORE_LINK, router, server_node, LinkParams(),
                     b_address=SERVER_ADDRESS)
    return network


def _addresses(spec: TransferSpec) -> tuple[list[str], str]:
    if spec.topology is None:
        return [client_address(i) for i in range(len(spec.paths))], SERVER_ADDRESS
    topology = spec.topology.finalize()
    return topology.host_addresses(topology.client), topology.host_addresses(topology.server)[0]


def build_transfer(spec: TransferSpec) -> TransferSetup:
    """Network, hosts and applications for `spec`, with the connect scheduled at t=0."""
    payload = derive_rng(spec.seed, "payload").randbytes(spec.size)
    client_addresses, server_address = _addresses(spec)
    client_host = make_host("client", client_addresses, spec.client_config, spec.seed)
    server_host = make_host("server", [server_address], spec.server_config, spec.seed)
    sender = BulkSender(payload)
    receiver = BulkReceiver(payload)
    client = HostDriver(client_host, sender)
    server = HostDriver(server_host, receiver)
    if spec.topology is None:
        network = _built_in_network(spec, client, server, client_addresses)
    else:
        topology = spec.topology
        bumps = {name: boxes for name, boxes in spec.topology_middleboxes.items()
                 if name not in topology.links}
        on_links = {name: boxes for name, boxes in spec.topology_middleboxes.items()
                    if name in topology.links}
        network = network_from_topology(
            topology, {topology.client: client, topology.server: server}, seed=spec.seed,
            codec=spec.codec, middleboxes=bumps, link_middleboxes=on_links)
    server_host.listen(spec.server_port)
    for step in spec.timeline:
        if step.action == "cut":
            network.cut_link_at(step.time, step.path)
        elif step.action == "restore":
            network.restore_link_at(step.time, step.path)
        else:
            assert step.changes is not None
            network.change_link_at(step.time, step.path, step.changes)

    def connect() -> None:
        sender.attach(open_connection(client_host, client_addresses[0], server_address,
                                      spec.server_port, network.now))

    network.call_at(0.0, connect)
    path_of = dict(zip(client_addresses, spec.path_names(), strict=True))
    return TransferSetup(spec, network, client, server, sender, receiver, payload,
                         server_address, path_of)


def finish_transfer(setup: TransferSetup,
                    extra_stop: Callable[[], bool] | None = None) -> TransferResult:
    """Run until the receiver has everything, either side's connection closed for good, or
    the time limit; then classify."""
    receiver, sender = setup.receiver, setup.sender

    def done() -> bool:
        if receiver.complete or receiver.first_mismatch is not None:
            return True
        if sender.log.closed_reason not in (None, "closed"):
            return True
        if receiver.log.closed_reason not in (None, "closed"):
            return True
        return extra_stop is not None and extra_stop()

    run = setup.network.run(until=setup.spec.time_limit, stop_when=done)
    return _result(setup, run.reason)


def run_transfer(spec: TransferSpec) -> TransferResult:
    return finish_transfer(build_transfer(spec))


def classify(setup: TransferSetup) -> str:
    """The outcome class (DESIGN.md). Corruption wins over everything: it must never pass
    silently; then an incomplete transfer (reset or stalled); then how MPTCP fared."""
    receiver, sender = setup.receiver, setup.sender
    if receiver.first_mismatch is not None or (
            receiver.complete and receiver.hasher.hexdigest()
            != hashlib.sha256(setup.payload).hexdigest()):
        return "corrupted"
    if not receiver.complete:
        reasons = {sender.log.closed_reason, receiver.log.closed_reason}
        if reasons & {"reset", "fastclose", "refused"}:
            return "reset"
        return "stalled"
    # What each side's connection concluded about MPTCP, plus what the events said.
    seen = set(sender.log.fallbacks + receiver.log.fallbacks)
    for connection in (sender.connection, receiver.connection):
        if connection is not None:
            seen.add(connection_outcome(connection))
    if any("reject" in reason or "refus" in reason
           for reason in sender.log.subflows_closed + receiver.log.subflows_closed):
        seen.add("subflow-rejected")
    for kind in ("mp-fail", "fallback-infinite-map", "fallback-syn", "subflow-rejected"):
        if kind in seen:
            return kind
    return "mptcp"


def _result(setup: TransferSetup, stop_reason: str) -> TransferResult:
    network, receiver = setup.network, setup.receiver
    subflows = []
    for key in network.flows.data_flows():
        stats = network.flows.flows[key]
        if key.dst == setup.server_address:
            subflows.append(SubflowBytes(key.label(), setup.path_of.get(key.src, "?"),
                                         stats.payload_bytes_received))
    start = setup.sender.log.established_at or 0.0
    end = receiver.last_byte_at if receiver.last_byte_at is not None else network.now
    duration = end - start
    goodput = receiver.received * 8 / duration / 1e6 if duration > 0 else 0.0
    return TransferResult(
        outcome=classify(setup),
        complete=receiver.complete,
        size=len(setup.payload),
        received=receiver.received,
        first_mismatch=receiver.first_mismatch,
        payload_sha256=hashlib.sha256(setup.payload).hexdigest(),
        received_sha256=receiver.hasher.hexdigest(),
        duration=network.now,
        goodput_mbit=goodput,
        stop_reason=stop_reason,
        subflows=subflows,
        client_events=setup.sender.log.as_dict(),
        server_events=receiver.log.as_dict(),
        client_stats=connection_stats(setup.sender.connection),
        server_stats=connection_stats(receiver.connection),
        network=network,
        server_address=setup.server_address,
        spec=setup.spec,
    )


def series_for(result: TransferResult) -> dict[str, list[tuple[float, int]]]:
    """Per-subflow payload byte series (data direction), for plotting or the CLI."""
    flows = result.network.flows
    return {key.label(): flows.series(key) for key in flows.data_flows()
            if isinstance(key, FlowKey) and key.dst == result.server_address}
