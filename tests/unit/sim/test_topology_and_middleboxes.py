"""Routing (source-based on multihomed endpoints, static on routers), middleboxes on links,
determinism by seed, and the guard against endpoints that never let time move on."""

from __future__ import annotations

import pytest

from middleboxes.contract import Direction
from testbed.net.params import LinkParams
from testbed.sim.network import SimNetwork
from testbed.sim.scheduler import SimulationError
from testbed.wire.types import Packet
from tests.unit.sim.toy_endpoints import (
    Burst,
    DropMatching,
    Echo,
    HoldFor,
    MarkPayload,
    PacedSender,
    Sink,
    StuckTimer,
    data_packet,
)

CLIENT_1, CLIENT_2, SERVER = "10.0.1.1", "10.0.2.1", "10.9.0.1"


def two_path_network(outbox: list, seed: int = 1, loss: float = 0.0,
                     extra_link: bool = False, trace: bool = False) -> SimNetwork:
    """client (two addresses, one per path) -- router -- server (one address)."""
    network = SimNetwork(seed, trace=trace)
    client = network.add_endpoint("client", Burst(outbox))
    server = network.add_endpoint("server", Echo())
    router = network.add_router("r")
    network.add_link("path1", client, router, LinkParams(delay_ms=5, loss_pct=loss * 100),
                     a_address=CLIENT_1)
    if extra_link:
        spare = network.add_endpoint("spare", Sink())
        network.add_link("path0", spare, router, LinkParams(delay_ms=1, loss_pct=50.0),
                         a_address="10.0.3.1")
    network.add_link("path2", client, router, LinkParams(delay_ms=20, loss_pct=loss * 100),
                     a_address=CLIENT_2)
    network.add_link("core", router, server, LinkParams(delay_ms=1), b_address=SERVER)
    return network


def test_multihomed_endpoint_routes_by_source_and_router_by_destination() -> None:
    outbox = [data_packet(CLIENT_1, SERVER, 1, 100), data_packet(CLIENT_2, SERVER, 2, 100),
              data_packet("10.0.7.7", SERVER, 3, 100)]
    network = two_path_network(outbox)
    network.run()
    links = network.counters()["links"]
    assert links["path1"]["upstream"]["packets_out"] == 1  # type: ignore[index]
    assert links["path2"]["upstream"]["packets_out"] == 1  # type: ignore[index]
    assert links["path2"]["downstream"]["packets_out"] == 1  # type: ignore[index]
    client = network.nodes["client"]
    assert client.counters.dropped_no_route == 1  # unknown source address
    echoes = {packet.tcp.seq: when for when, packet in client.endpoint.received}
    assert echoes[1] == pytest.approx(2 * 0.006) and echoes[2] == pytest.approx(2 * 0.021)
    assert network.nodes["r"].counters.forwarded == 4


def test_router_drops_without_route_and_on_ttl_expiry() -> None:
    expired = data_packet(CLIENT_1, SERVER, 1, 10)
    expired.ttl = 1
    network = two_path_network([data_packet(CLIENT_1, "192.0.2.1", 0, 10), expired])
    network.run()
    router = network.nodes["r"].counters
    assert (router.dropped_no_route, router.dropped_ttl, router.forwarded) == (1, 1, 0)


def test_endpoint_drops_packets_not_addressed_to_it() -> None:
    network = SimNetwork(1)
    sink = Sink()
    sender = network.add_endpoint("a", Burst([data_packet("10.0.0.1", "10.0.0.99", 0, 10)]))
    receiver = network.add_endpoint("b", sink)
    network.add_link("ab", sender, receiver, a_address="10.0.0.1", b_address="10.0.0.2")
    network.run()
    assert sink.received == [] and network.nodes["b"].counters.dropped_not_local == 1


def test_bad_topologies_are_refused_with_names() -> None:
    network = SimNetwork(1)
    a = network.add_endpoint("a", Sink())
    router = network.add_router("r")
    with pytest.raises(ValueError, match="node 'a' already exists"):
        network.add_endpoint("a", Sink())
    with pytest.raises(ValueError, match="only endpoint nodes take an address"):
        network.add_link("x", a, router, b_address="10.0.0.1")
    network.add_link("ar", a, router, a_address="10.0.0.1")
    with pytest.raises(ValueError, match="already bound to link ar"):
        network.add_link("ar2", a, router, a_address="10.0.0.1")
    with pytest.raises(KeyError, match="no link named 'nope'"):
        network.link("nope")
    with pytest.raises(TypeError, match="no receive_packet"):
        network.add_endpoint("broken", object())  # type: ignore[arg-type]


def test_middlebox_sees_direction_relative_to_client_and_can_drop() -> None:
    dropper = DropMatching(lambda packet: packet.tcp.seq == 2, Direction.DOWNSTREAM)
    network = SimNetwork(1)
    client = network.add_endpoint("client", Burst(
        [data_packet("10.0.0.1", "10.0.0.2", seq, 10) for seq in (1, 2)]))
    network.add_endpoint("server", Echo())
    network.add_link("ab", client, network.nodes["server"], LinkParams(delay_ms=1),
                     a_address="10.0.0.1", b_address="10.0.0.2", middleboxes=[dropper])
    network.run()
    assert dropper.seen_directions == [Direction.UPSTREAM, Direction.UPSTREAM,
                                       Direction.DOWNSTREAM, Direction.DOWNSTREAM]
    assert [packet.tcp.seq for _, packet in client.endpoint.received] == [1]
    assert network.counters()["links"]["ab"]["middleboxes"]["drop-matching"]["dropped"] == 1


def test_middleboxes_are_met_in_path_order_in_each_direction() -> None:
    order: list[str] = []

    def recorder(name: str) -> DropMatching:
        return DropMatching(lambda _p: order.append(name) is not None, name=name)

    network = SimNetwork(1)
    client = network.add_endpoint("client", Burst([data_packet("10.0.0.1", "10.0.0.2", 0, 10)]))
    server = network.add_endpoint("server", Echo())
    network.add_link("ab", client, server, a_address="10.0.0.1", b_address="10.0.0.2",
                     middleboxes=[recorder("near-client"), recorder("near-server")])
    network.run()
    assert order == ["near-client", "near-server", "near-server", "near-client"]


def test_held_packets_are_released_at_the_deadline_and_continue() -> None:
    network = SimNetwork(1)
    sink = Sink()
    sender = network.add_endpoint("a", Burst([data_packet("10.0.0.1", "10.0.0.2", 0, 10)]))
    receiver = network.add_endpoint("b", sink)
    marker = MarkPayload()
    network.add_link("ab", sender, receiver, LinkParams(delay_ms=10), a_address="10.0.0.1",
                     b_address="10.0.0.2", middleboxes=[HoldFor(0.25), marker])
    network.run()
    (arrival, packet), = sink.received
    assert arrival == pytest.approx(0.26)
    assert packet.tcp.payload[0] == 0xFF and marker.counters.changed == 1


def test_middleboxes_edit_a_copy_never_the_senders_object() -> None:
    original = data_packet("10.0.0.1", "10.0.0.2", 0, 10)
    network = SimNetwork(1)
    sink = Sink()
    sender = network.add_endpoint("a", Burst([original]))
    network.add_link("ab", sender, network.add_endpoint("b", sink), a_address="10.0.0.1",
                     b_address="10.0.0.2", middleboxes=[MarkPayload()])
    network.run()
    assert original.tcp.payload == bytes(10)
    assert sink.received[0][1].tcp.payload[0] == 0xFF


def test_same_seed_same_trace_and_other_seed_differs() -> None:
    def digest(seed: int) -> str:
        outbox = [data_packet(CLIENT_1 if i % 2 else CLIENT_2, SERVER, i, 500) for i in range(400)]
        network = two_path_network(outbox, seed=seed, loss=0.1, trace=True)
        network.run()
        return network.trace_digest()

    assert digest(7) == digest(7)
    assert digest(7) != digest(8)


def test_adding_a_link_does_not_shift_another_links_losses() -> None:
    def survivors(extra_link: bool) -> list[int]:
        outbox = [data_packet(CLIENT_1, SERVER, i, 100) for i in range(300)]
        network = two_path_network(outbox, seed=5, loss=0.2, extra_link=extra_link)
        network.run()
        return [packet.tcp.seq for _, packet in network.nodes["client"].endpoint.received]

    baseline = survivors(False)
    assert 0 < len(baseline) < 300
    assert survivors(True) == baseline


def test_timer_driven_endpoint_paces_itself() -> None:
    network = SimNetwork(1)
    sink = Sink()
    sender = network.add_endpoint("a", PacedSender("10.0.0.1", "10.0.0.2", 5, 0.1))
    network.add_link("ab", sender, network.add_endpoint("b", sink), a_address="10.0.0.1",
                     b_address="10.0.0.2")
    result = network.run()
    assert [when for when, _ in sink.received] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert result.reason == "idle"


def test_an_endpoint_stuck_at_one_instant_is_an_error_naming_it() -> None:
    network = SimNetwork(1)
    network.add_endpoint("stuck", StuckTimer())
    with pytest.raises(SimulationError, match="endpoint stuck: timer fired"):
        network.run()


def test_application_actions_run_at_their_time_and_are_pumped() -> None:
    network = SimNetwork(1)
    sink = Sink()
    burst = Burst([])
    sender = network.add_endpoint("a", burst)
    network.add_link("ab", sender, network.add_endpoint("b", sink), LinkParams(delay_ms=2),
                     a_address="10.0.0.1", b_address="10.0.0.2")
    network.call_at(1.5, lambda: burst.outbox.append(data_packet("10.0.0.1", "10.0.0.2", 0, 1)))
    network.run()
    assert [when for when, _ in sink.received] == pytest.approx([1.502])


def test_router_middleboxes_see_directions_by_arrival_link_and_can_hold() -> None:
    seen = DropMatching(lambda _packet: False, name="observer")
    network = SimNetwork(1)
    client = network.add_endpoint("client", Burst([data_packet(CLIENT_1, SERVER, 7, 10)]))
    server = network.add_endpoint("server", Echo())
    router = network.add_router("r", middleboxes=[seen, HoldFor(0.1)])
    network.add_link("access", client, router, LinkParams(delay_ms=1), a_address=CLIENT_1)
    network.add_link("core", router, server, LinkParams(delay_ms=1), b_address=SERVER)
    network.run()
    assert seen.seen_directions == [Direction.UPSTREAM, Direction.DOWNSTREAM]
    # held 100 ms inside the router each way, plus 2 x 1 ms per direction
    assert [when for when, _ in client.endpoint.received] == pytest.approx([0.204])
    counters = network.counters()["nodes"]["r"]
    assert counters["forwarded"] == 2 and counters["middleboxes"]["hold"]["seen"] == 2


class Exploding(Sink):
    """Raises on every segment whose sequence number is odd, as a stack might on a segment it
    cannot place; keeps the others."""

    def receive_packet(self, packet: Packet, now: float) -> None:  # type: ignore[override]
        if packet.tcp.seq % 2:
            raise KeyError("no such subflow")
        super().receive_packet(packet, now)


class TimerExploding(Sink):
    def get_timer(self) -> float | None:
        return 0.25

    def handle_timer(self, now: float) -> None:
        raise KeyError("no such subflow")


def test_a_segment_the_endpoint_raises_on_is_dropped_counted_by_reason_and_the_run_goes_on() -> None:
    network = SimNetwork(1)
    sender = network.add_endpoint("a", Burst([data_packet("10.0.0.1", "10.0.0.2", seq, 10)
                                              for seq in (0, 1, 2, 3, 4)]))
    sink = Exploding()
    network.add_link("ab", sender, network.add_endpoint("b", sink), LinkParams(delay_ms=3),
                     a_address="10.0.0.1", b_address="10.0.0.2")
    network.run()
    assert [packet.tcp.seq for _when, packet in sink.received] == [0, 2, 4]
    counters = network.counters()["nodes"]["b"]
    assert counters["received"] == 5 and counters["dropped_receive_error"] == 2
    assert counters["receive_errors"] == {"receive:KeyError": 2}
    assert counters["last_receive_error"] == "KeyError: 'no such subflow'"


def test_an_endpoint_failure_in_its_timer_names_the_endpoint_call_and_time() -> None:
    network = SimNetwork(1)
    network.add_link("ab", network.add_endpoint("a", Sink()),
                     network.add_endpoint("b", TimerExploding()), LinkParams(delay_ms=3),
                     a_address="10.0.0.1", b_address="10.0.0.2")
    with pytest.raises(SimulationError, match=r"endpoint b raised KeyError in handle_timer "
                                              r"at t=0\.250000") as caught:
        network.run()
    assert isinstance(caught.value.__cause__, KeyError)
