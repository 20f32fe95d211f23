"""The simulated network: nodes, links, virtual time, and the loop that drives endpoints.

Build it like a drawing (add_endpoint, add_router, add_link, add_route), then `run`. Everything
that happens is a function of the seed: each link direction draws from its own random stream
(testbed.sim.rng), events at one instant run in scheduling order, and an optional trace records
every send, drop and delivery so two runs can be compared exactly (`trace_digest`).

Endpoints are driven the sans-IO way: after a packet is delivered, after a timer fires and
after an application callback, the endpoint's `packets_to_send(now)` is drained onto the links
and its `get_timer()` re-read. Deliveries at one instant are batched into one pump per
endpoint, as a real stack would process everything ready before sending.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Sequence

from middleboxes.contract import Direction, Middlebox
from testbed.net.params import LinkParams
from testbed.sim.chain import ScheduledChain
from testbed.sim.endpoint import PacketEndpoint
from testbed.sim.link import Link
from testbed.sim.nodes import EndpointNode, Node, RouterNode
from testbed.sim.packets import WireCodec, copy_packet, load_wire_codec
from testbed.sim.pcap import PcapWriter
from testbed.sim.rng import derive_rng
from testbed.sim.scheduler import EventScheduler, RunResult, SimulationError
from testbed.sim.stats import MAX_BIN_SECONDS, FlowTable
from testbed.wire.types import Packet

# An endpoint whose timer keeps firing at the same instant without moving time on is stuck in
# a loop; stop with an error naming it rather than spinning forever.
MAX_TIMER_FIRES_PER_INSTANT = 10_000

TraceEntry = tuple[float, str, str, str, int, int, int]


class SimNetwork:
    """A whole simulated network and its clock.

    codec: True (default) encodes and decodes every packet at every hop with testbed.wire, so
    anything run in the simulator also exercises the codec and its checksums; False skips
    that (the benchmark); or a WireCodec to use other functions.
    trace: record every send, drop and delivery (for `trace_digest`).
    bin_seconds: width of the per-flow byte time-series bins (at most 0.1 s).
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        codec: bool | WireCodec = True,
        trace: bool = False,
        bin_seconds: float = MAX_BIN_SECONDS,
    ) -> None:
        self.seed = seed
        self.scheduler = EventScheduler()
        if codec is True:
            self._codec: WireCodec | None = load_wire_codec()
        elif codec is False:
            self._codec = None
        else:
            self._codec = codec
        self.flows = FlowTable(bin_seconds)
        self.nodes: dict[str, Node] = {}
        self.links: dict[str, Link] = {}
        self.trace: list[TraceEntry] | None = [] if trace else None
        self.packets_delivered = 0

    # --- building ------------------------------------------------------------------------
    @property
    def now(self) -> float:
        return self.scheduler.now

    @property
    def codec_enabled(self) -> bool:
        return self._codec is not None

    def rng(self, component: str) -> random.Random:
        """A random stream for `component` (e.g. a middlebox) derived from the network seed."""
        return derive_rng(self.seed, component)

    def _check_new_name(self, name: str, table: dict[str, object], what: str) -> None:
        if not name:
            raise ValueError(f"{what} name must not be empty")
        if name in table:
            raise ValueError(f"{what} {name!r} already exists")

    def add_endpoint(self, name: str, endpoint: PacketEndpoint) -> EndpointNode:
        self._check_new_name(name, self.nodes, "node")  # type: ignore[arg-type]
        for method in ("receive_packet", "packets_to_send", "get_timer", "handle_timer"):
            if not callable(getattr(endpoint, method, None)):
                raise TypeError(f"endpoint for node {name!r} has no {method}() method")
        node = EndpointNode(name, endpoint)
        self.nodes[name] = node
        return node

    def add_router(self, name: str, middleboxes: Sequence[Middlebox] = ()) -> RouterNode:
        """A router; `middleboxes` run inside it on every packet it forwards (a packet that
        arrived on a link where the router is the `b` end is UPSTREAM)."""
        self._check_new_name(name, self.nodes, "node")  # type: ignore[arg-type]
        node = RouterNode(name)
        if middleboxes:
            node.chain = ScheduledChain(
                middleboxes, self.scheduler,
                lambda packet, _direction: self._forward(node, packet))
        self.nodes[name] = node
        return node

    def add_link(
        self,
        name: str,
        node_a: Node,
        node_b: Node,
        params: LinkParams | None = None,
        downstream: LinkParams | None = None,
        *,
        a_address: str | None = None,
        b_address: str | None = None,
        middleboxes: Sequence[Middlebox] = (),
    ) -> Link:
        """Connect node_a (client side: a->b is UPSTREAM) to node_b.

        `params` shapes a->b, `downstream` shapes b->a (same as `params` when None).
        `a_address`/`b_address` bind an endpoint's address to this link. A router at one end
        gets a host route to each address bound at the other end.
        """
        self._check_new_name(name, self.links, "link")  # type: ignore[arg-type]
        for node in (node_a, node_b):
            if self.nodes.get(node.name) is not node:
                raise ValueError(f"link {name}: node {node.name!r} is not in this network")
        if node_a is node_b:
            raise ValueError(f"link {name}: both ends are node {node_a.name!r}")
        bindings = [(node, address) for node, address in ((node_a, a_address),
                                                          (node_b, b_address))
                    if address is not None]
        for node, address in bindings:  # check everything before changing anything
            if not isinstance(node, EndpointNode):
                raise ValueError(f"link {name}: only endpoint nodes take an address "
                                 f"({node.name} is a router; use add_route)")
            node.check_bindable(address)
        upstream = params or LinkParams()
        link = Link(
            name, node_a, node_b, upstream, downstream or upstream,
            scheduler=self.scheduler, rng_for=self.rng, codec=self._codec,
            middleboxes=middleboxes, on_arrival=self._arrive,
        )
        for node, address in bindings:
            node.bind(address, link)  # type: ignore[union-attr]
        self.links[name] = link
        node_a.links.append(link)
        node_b.links.append(link)
        for router, address in ((node_a, b_address), (node_b, a_address)):
            if isinstance(router, RouterNode) and address is not None:
                router.add_route(f"{address}/{128 if ':' in address else 32}", link)
        return link

    def add_route(self, router: RouterNode, prefix: str, link: Link | str) -> None:
        """Static route on `router`: destinations in `prefix` leave through `link`."""
        router.add_route(prefix, self.links[link] if isinstance(link, str) else link)

    def link(self, name: str) -> Link:
        try:
            return self.links[name]
        except KeyError:
            raise KeyError(f"no link named {name!r}; links: {sorted(self.links)}") from None

    def endpoints(self) -> list[EndpointNode]:
        return [node for node in self.nodes.values() if isinstance(node, EndpointNode)]

    def capture(self, name: str, writer: PcapWriter) -> None:
        """Record every packet link `name` delivers, both directions, into `writer`."""
        link = self.link(name)
        from testbed.wire import encode_packet
        from testbed.wire.errors import WireError

        def tap(now: float, _direction: Direction, packet: Packet) -> None:
            try:
                data = encode_packet(packet)
            except WireError:
                return  # already counted as malformed by the link, or never sendable
            writer.write(data, now)

        link.taps.append(tap)

    # --- timeline ------------------------------------------------------------------------
    def call_at(self, when: float, action: Callable[[], None]) -> None:
        """Run `action()` at virtual time `when` (an application step, a link change), then
        let every endpoint send what the action made it want to send."""
        self.scheduler.call_at(when, self._run_action, action)

    def _run_action(self, action: Callable[[], None]) -> None:
        action()
        self.poke()

    def cut_link_at(self, when: float, name: str) -> None:
        link = self.link(name)
        self.call_at(when, link.cut)

    def restore_link_at(self, when: float, name: str) -> None:
        link = self.link(name)
        self.call_at(when, link.restore)

    def set_link_params_at(
        self, when: float, name: str, params: LinkParams, direction: Direction | None = None
    ) -> None:
        """At `when`, replace the link's shaping (one direction or both) with `params`."""
        link = self.link(name)
        self.call_at(when, lambda: link.set_params(params, direction))

    def change_link_at(
        self, when: float, name: str, changes: dict[str, object],
        direction: Direction | None = None,
    ) -> None:
        """At `when`, change only the named LinkParams fields, keeping the others as they are
        then (e.g. {"rate_mbit": 5} after an earlier delay change keeps that delay)."""
        LinkParams().updated(changes)  # unknown names and bad values fail now
        link = self.link(name)
        self.call_at(when, lambda: link.change_params(changes, direction))

    # --- driving endpoints ---------------------------------------------------------------
    def poke(self, nodes: Iterable[EndpointNode] | None = None) -> None:
        """Drain packets and re-read timers now, for endpoints whose state the caller changed
        from outside the simulation (an API call such as connect or send)."""
        for node in self.endpoints() if nodes is None else nodes:
            self._pump(node)

    def _failed(self, node: EndpointNode, call: str, error: Exception) -> SimulationError:
        """The error to raise when an endpoint call fails: says where and when (the original
        exception stays chained, with its traceback)."""
        return SimulationError(f"endpoint {node.name} raised {type(error).__name__} in {call} "
                               f"at t={self.scheduler.now:.6f}: {error}")

    def _pump(self, node: EndpointNode) -> None:
        node.pump_pending = False
        now = self.scheduler.now
        endpoint = node.endpoint
        try:
            packets = list(endpoint.packets_to_send(now))
        except SimulationError:
            raise
        except Exception as error:
            raise self._failed(node, "packets_to_send", error) from error
        for packet in packets:
            self._send_from(node, packet)
        try:
            deadline = endpoint.get_timer()
        except Exception as error:
            raise self._failed(node, "get_timer", error) from error
        if deadline == node.timer_deadline:
            return
        node.timer_version += 1
        node.timer_deadline = deadline
        if deadline is not None:
            self.scheduler.call_at(deadline, self._timer_due, (node, node.timer_version))

    def _pump_event(self, node: EndpointNode) -> None:
        self._pump(node)

    def _timer_due(self, event: tuple[EndpointNode, int]) -> None:
        node, version = event
        if version != node.timer_version:
            return
        now = self.scheduler.now
        if node.last_timer_fire == now:
            node.same_instant_timer_fires += 1
            if node.same_instant_timer_fires > MAX_TIMER_FIRES_PER_INSTANT:
                raise SimulationError(
                    f"endpoint {node.name}: timer fired {MAX_TIMER_FIRES_PER_INSTANT} times at "
                    f"t={now} without time moving on (get_timer() keeps returning {now})")
        else:
            node.last_timer_fire = now
            node.same_instant_timer_fires = 0
        node.timer_deadline = None
        try:
            node.endpoint.handle_timer(now)
        except SimulationError:
            raise
        except Exception as error:
            raise self._failed(node, "handle_timer", error) from error
        self._pump(node)

    def _send_from(self, node: EndpointNode, packet: Packet) -> None:
        link = node.route_for_source(packet.src)
        if link is None:
            node.counters.dropped_no_route += 1
            self._trace("no-route", node.name, packet)
            return
        node.counters.sent += 1
        self.flows.record_sent(packet)
        if self.trace is not None:
            self._trace("send", f"{node.name}>{link.name}", packet)
        link.send(packet, node)

    def _arrive(self, node: Node, packet: Packet, link: Link) -> None:
        if isinstance(node, EndpointNode):
            if packet.dst not in node.link_by_address and node.link_by_address:
                node.counters.dropped_not_local += 1
                self._trace("not-local", node.name, packet)
                return
            node.counters.received += 1
            self.packets_delivered += 1
            self.flows.record_received(packet, self.scheduler.now)
            if self.trace is not None:
                self._trace("deliver", f"{link.name}>{node.name}", packet)
            try:
                node.endpoint.receive_packet(packet, self.scheduler.now)
            except SimulationError:
                raise
            except Exception as error:  # a segment the handler cannot take: dropped, counted,
                node.counters.count_receive_error(error)  # and the endpoint pumped as usual
                self._trace("receive-error", node.name, packet)
            if not node.pump_pending:
                node.pump_pending = True
                self.scheduler.call_at(self.scheduler.now, self._pump_event, node)
            return
        assert isinstance(node, RouterNode)
        if packet.ttl <= 1:
            node.counters.dropped_ttl += 1
            self._trace("ttl", node.name, packet)
            return
        packet.ttl -= 1
        if node.chain is not None:
            direction = Direction.UPSTREAM if node is link.node_b else Direction.DOWNSTREAM
            node.chain.push(packet if self._codec is not None else copy_packet(packet),
                            direction)
            return
        self._forward(node, packet)

    def _forward(self, node: RouterNode, packet: Packet) -> None:
        out = node.route_for_destination(packet.dst)
        if out is None:
            node.counters.dropped_no_route += 1
            self._trace("no-route", node.name, packet)
            return
        node.counters.forwarded += 1
        out.send(packet, node)

    def _trace(self, event: str, where: str, packet: Packet) -> None:
        if self.trace is None:
            return
        segment = packet.tcp
        self.trace.append((
            self.scheduler.now, event, where,
            f"{packet.src}:{segment.src_port}>{packet.dst}:{segment.dst_port}",
            segment.seq, segment.flags, len(segment.payload),
        ))

    def trace_digest(self) -> str:
        """SHA-256 over the trace: equal digests mean the same events at the same times."""
        if self.trace is None:
            raise SimulationError("trace_digest: network was built with trace=False")
        digest = hashlib.sha256()
        for entry in self.trace:
            digest.update(repr(entry).encode())
        return digest.hexdigest()

    # --- running -------------------------------------------------------------------------
    def run(
        self,
        until: float | None = None,
        stop_when: Callable[[], bool] | None = None,
        max_events: int | None = None,
    ) -> RunResult:
        """Run until `stop_when()` holds, virtual time `until`, or nothing is left to happen.
        Endpoints are pumped first, so work queued by API calls before `run` goes out."""
        self.poke()
        return self.scheduler.run(until=until, stop_when=stop_when, max_events=max_events)

    # --- reporting -----------------------------------------------------------------------
    @staticmethod
    def _node_counters(node: Node) -> dict[str, object]:
        counters: dict[str, object] = dict(node.counters.as_dict())
        if node.counters.receive_error_reasons:
            counters["receive_errors"] = dict(node.counters.receive_error_reasons)
            counters["last_receive_error"] = node.counters.last_receive_error
        if isinstance(node, RouterNode) and node.chain is not None:
            counters["middleboxes"] = node.chain.counters()
            counters["middlebox_errors"] = node.chain.errors_counted()
        return counters

    def counters(self) -> dict[str, object]:
        """Links, nodes and flows, as plain data for JSON."""
        return {
            "links": {name: link.counters() for name, link in self.links.items()},
            "nodes": {name: self._node_counters(node) for name, node in self.nodes.items()},
            "flows": {key.label(): stats.as_dict() for key, stats in self.flows.flows.items()},
        }
