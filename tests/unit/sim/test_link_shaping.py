"""Links shape each direction: serialization rate, delay, jitter, loss, drop-tail queues,
cuts and parameter changes at given virtual times."""

from __future__ import annotations

import pytest

from testbed.errors import SpecError
from testbed.net.params import MAX_QUEUE_PKTS, LinkParams
from testbed.sim.network import SimNetwork
from tests.unit.sim.toy_endpoints import Burst, Echo, PacedSender, Sink, data_packet

PAYLOAD = 1460  # 1500-byte IPv4 packets: 1.2 ms each at 10 Mbit/s
SERIALIZE_10MBIT = 1500 * 8 / 10e6


def burst_network(count: int, params: LinkParams, seed: int = 1) -> tuple[SimNetwork, Sink]:
    network = SimNetwork(seed)
    sink = Sink()
    sender = network.add_endpoint("a", Burst(
        [data_packet("10.0.0.1", "10.0.0.2", i, PAYLOAD) for i in range(count)]))
    receiver = network.add_endpoint("b", sink)
    network.add_link("ab", sender, receiver, params, a_address="10.0.0.1", b_address="10.0.0.2")
    return network, sink


def test_rate_and_delay_set_exact_arrival_times() -> None:
    network, sink = burst_network(50, LinkParams(rate_mbit=10, delay_ms=5, queue_pkts=MAX_QUEUE_PKTS))
    network.run()
    times = [when for when, _ in sink.received]
    expected = [(i + 1) * SERIALIZE_10MBIT + 0.005 for i in range(50)]
    assert times == pytest.approx(expected, abs=1e-9)
    assert [packet.tcp.seq for _, packet in sink.received] == list(range(50))


def test_unlimited_rate_only_delays() -> None:
    network, sink = burst_network(3, LinkParams(rate_mbit=None, delay_ms=20))
    network.run()
    assert [when for when, _ in sink.received] == pytest.approx([0.02] * 3)


def test_drop_tail_queue_in_packets() -> None:
    network, sink = burst_network(100, LinkParams(rate_mbit=10, queue_pkts=10))
    network.run()
    counters = network.link("ab").counters()
    upstream = counters["upstream"]
    # one packet serializing + ten waiting survive the burst
    assert len(sink.received) == 11
    assert upstream["dropped_queue"] == 89 and upstream["max_queue_packets"] == 10
    assert [packet.tcp.seq for _, packet in sink.received] == list(range(11))


def test_drop_tail_queue_in_bytes() -> None:
    network, sink = burst_network(
        20, LinkParams(rate_mbit=10, queue_pkts=MAX_QUEUE_PKTS, queue_bytes=4500))
    network.run()
    assert len(sink.received) == 4  # 1 serializing + 3 x 1500 bytes waiting


def test_random_loss_matches_the_configured_fraction() -> None:
    network, sink = burst_network(20000, LinkParams(loss_pct=5.0, queue_pkts=MAX_QUEUE_PKTS))
    network.run()
    delivered = len(sink.received) / 20000
    assert delivered == pytest.approx(0.95, abs=0.007)
    assert network.link("ab").counters()["upstream"]["dropped_loss"] == 20000 - len(sink.received)


def test_jitter_keeps_order_unless_reordering_is_allowed() -> None:
    def arrivals(reorder: bool) -> list[tuple[float, int]]:
        network = SimNetwork(3)
        sink = Sink()
        sender = network.add_endpoint("a", PacedSender("10.0.0.1", "10.0.0.2", 500, 0.001))
        receiver = network.add_endpoint("b", sink)
        network.add_link("ab", sender, receiver,
                         LinkParams(delay_ms=10, jitter_ms=5, reorder=reorder),
                         a_address="10.0.0.1", b_address="10.0.0.2")
        network.run()
        return [(when, packet.tcp.seq) for when, packet in sink.received]

    ordered = arrivals(reorder=False)
    assert [seq for _, seq in ordered] == list(range(500))
    one_way = [when - seq * 0.001 for when, seq in ordered]
    assert min(one_way) >= 0.005 - 1e-9 and max(one_way) > min(one_way) + 0.003
    shuffled = arrivals(reorder=True)
    seqs = [seq for _, seq in shuffled]
    assert sorted(seqs) == list(range(500)) and seqs != list(range(500))
    delays = [when - seq * 0.001 for when, seq in shuffled]
    assert min(delays) >= 0.005 - 1e-9 and max(delays) <= 0.015 + 1e-9


def test_cut_and_restore_on_a_timeline() -> None:
    network = SimNetwork(1)
    sink = Sink()
    sender = network.add_endpoint("a", PacedSender("10.0.0.1", "10.0.0.2", 100, 0.01))
    receiver = network.add_endpoint("b", sink)
    network.add_link("ab", sender, receiver, LinkParams(rate_mbit=100, delay_ms=1),
                     a_address="10.0.0.1", b_address="10.0.0.2")
    network.cut_link_at(0.305, "ab")
    network.restore_link_at(0.605, "ab")
    network.run()
    seqs = [packet.tcp.seq for _, packet in sink.received]
    assert seqs == list(range(31)) + list(range(61, 100))
    assert network.link("ab").counters()["upstream"]["dropped_down"] == 30


def test_cut_drops_what_is_queued_and_on_the_wire() -> None:
    network, sink = burst_network(10, LinkParams(rate_mbit=1, queue_pkts=MAX_QUEUE_PKTS))
    network.cut_link_at(0.05, "ab")  # 12 ms per packet: four are through by then
    network.run()
    assert len(sink.received) == 4
    assert network.link("ab").counters()["upstream"]["dropped_down"] == 6
    assert network.link("ab").counters()["up"] is False


def test_rate_change_applies_to_packets_not_yet_serializing() -> None:
    network, sink = burst_network(20, LinkParams(rate_mbit=10, queue_pkts=MAX_QUEUE_PKTS))
    network.set_link_params_at(0.0065, "ab", LinkParams(rate_mbit=1, queue_pkts=MAX_QUEUE_PKTS))
    network.run()
    # the sixth packet started at 6.0 ms at 10 Mbit/s; the 14 after it take 12 ms each
    assert sink.received[5][0] == pytest.approx(0.0072)
    assert sink.received[-1][0] == pytest.approx(0.0072 + 14 * 0.012)


def test_directions_are_shaped_independently() -> None:
    network = SimNetwork(1)
    sender = network.add_endpoint("a", Burst([data_packet("10.0.0.1", "10.0.0.2", 0, 100)]))
    echo = network.add_endpoint("b", Echo())
    network.add_link("ab", sender, echo, LinkParams(delay_ms=10), LinkParams(delay_ms=30),
                     a_address="10.0.0.1", b_address="10.0.0.2")
    network.run()
    assert [when for when, _ in sender.endpoint.received] == pytest.approx([0.04])


def test_flow_counters_and_time_series_bins() -> None:
    network, _sink = burst_network(100, LinkParams(rate_mbit=10, queue_pkts=MAX_QUEUE_PKTS))
    network.run()
    (key,) = network.flows.data_flows()
    stats = network.flows.flows[key]
    assert stats.payload_bytes_received == 100 * PAYLOAD == stats.payload_bytes_sent
    series = network.flows.series(key)
    # 120 ms of serialization: two 100 ms bins, the first holding 83 whole packets
    assert [start for start, _ in series] == [0.0, 0.1]
    assert series[0][1] == 83 * PAYLOAD and sum(size for _, size in series) == 100 * PAYLOAD


def test_bins_are_assigned_by_virtual_time_without_float_slips() -> None:
    network = SimNetwork(1)
    sink = Sink()
    sender = network.add_endpoint("a", PacedSender("10.0.0.1", "10.0.0.2", 8, 0.1, 100))
    network.add_link("ab", sender, network.add_endpoint("b", sink), a_address="10.0.0.1",
                     b_address="10.0.0.2")
    network.run()
    (key,) = network.flows.data_flows()
    # one packet every 100 ms, arriving exactly on bin boundaries (0.1 x k accumulates error)
    assert [size for _, size in network.flows.series(key)] == [100] * 8


def test_changing_some_parameters_keeps_the_others() -> None:
    network, sink = burst_network(20, LinkParams(rate_mbit=10, delay_ms=20, queue_pkts=MAX_QUEUE_PKTS))
    network.change_link_at(0.0065, "ab", {"rate_mbit": 1})
    network.run()
    assert sink.received[-1][0] == pytest.approx(0.0072 + 14 * 0.012 + 0.020)
    assert network.link("ab").shapers[next(iter(network.link("ab").shapers))].params == (
        LinkParams(rate_mbit=1, delay_ms=20, queue_pkts=MAX_QUEUE_PKTS))


def test_a_bad_change_fails_when_scheduled_not_when_applied() -> None:
    network, _ = burst_network(1, LinkParams())
    with pytest.raises(SpecError, match="unknown link parameter 'rate'"):
        network.change_link_at(1.0, "ab", {"rate": 1})
