"""Invariants of a link direction under arbitrary parameters, traffic and cuts (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.net.params import LinkParams
from testbed.sim.network import SimNetwork
from tests.unit.sim.toy_endpoints import Burst, Sink, data_packet

params_strategy = st.builds(
    lambda delay_ms, jitter_share, **others: LinkParams(
        delay_ms=delay_ms, jitter_ms=min(20.0, delay_ms * jitter_share), **others),
    rate_mbit=st.one_of(st.none(), st.floats(0.5, 1000)),
    delay_ms=st.floats(0, 50),
    jitter_share=st.floats(0, 1),  # jitter never exceeds the delay (LinkParams refuses it)
    loss_pct=st.floats(0, 50),
    queue_pkts=st.one_of(st.none(), st.integers(1, 50)),
    queue_bytes=st.one_of(st.none(), st.integers(1500, 60_000)),
    reorder=st.booleans(),
)


@settings(max_examples=60, deadline=None)
@given(params=params_strategy, sizes=st.lists(st.integers(0, 1460), min_size=1, max_size=80),
       cut_at=st.one_of(st.none(), st.floats(0, 0.2)), restore_after=st.floats(0, 0.2),
       seed=st.integers(0, 2**32))
def test_every_packet_is_delivered_or_counted_as_dropped_and_order_holds(
        params: LinkParams, sizes: list[int], cut_at: float | None, restore_after: float,
        seed: int) -> None:
    network = SimNetwork(seed, codec=False)
    sink = Sink()
    packets = [data_packet("10.0.0.1", "10.0.0.2", seq, size) for seq, size in enumerate(sizes)]
    sender = network.add_endpoint("a", Burst(packets))
    network.add_link("ab", sender, network.add_endpoint("b", sink), params,
                     a_address="10.0.0.1", b_address="10.0.0.2")
    if cut_at is not None:
        network.cut_link_at(cut_at, "ab")
        network.restore_link_at(cut_at + restore_after, "ab")
    network.run()
    counters = network.link("ab").counters()["upstream"]
    dropped = (counters["dropped_loss"] + counters["dropped_queue"]  # type: ignore[index]
               + counters["dropped_down"])  # type: ignore[index]
    assert counters["packets_in"] == len(sizes)  # type: ignore[index]
    assert counters["packets_out"] == len(sink.received)  # type: ignore[index]
    assert len(sink.received) + dropped == len(sizes)
    times = [when for when, _ in sink.received]
    assert times == sorted(times)
    if not params.reorder:
        seqs = [packet.tcp.seq for _, packet in sink.received]
        assert seqs == sorted(seqs)
    minimum_delay = max(0.0, params.delay_ms - params.jitter_ms) / 1000
    assert all(when >= minimum_delay - 1e-12 for when in times)
