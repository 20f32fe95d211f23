"""The stack counts its fallbacks and joins under the names Linux uses (MPTcpExt without the
prefix), because testbed.outcome reads a python end's counters exactly as the kernel's: the
fallback matrix cells of python endpoints are classified from these.

Each test reproduces one middlebox of experiments/fallback_matrix.toml in memory.
"""

from __future__ import annotations

import hashlib

from testbed.mptcp.config import StackConfig
from testbed.wire.types import Dss, MpJoinSyn, MpJoinSynAck, Packet

from .harness import Pair
from .test_transfer import _open, _payload, transfer


def _strip_dss(*, data_only: bool):
    """strip_options what=dss (packets=data when data_only)."""

    def tamper(packet: Packet, where: str) -> list[Packet]:
        if packet.tcp.payload or not data_only:
            packet.tcp.options = [o for o in packet.tcp.options if type(o) is not Dss]
        return [packet]

    return tamper


def _strip_mp_join(packet: Packet, where: str) -> list[Packet]:
    """strip_options what=mp_join packets=syn,synack on every path (the box sits on path B,
    where only the join runs)."""
    packet.tcp.options = [o for o in packet.tcp.options if type(o) not in (MpJoinSyn, MpJoinSynAck)]
    return [packet]


def test_dss_stripped_everywhere_counts_a_data_fallback_on_both_ends() -> None:
    """strip_dss_all: the first data rides on MP_CAPABLE (mapped), later data arrives unmapped
    (server: DssFallback); the server never sends a DSS, so the client is not fully established
    when its data is ACKed without a data ACK (client: MPCapableDataFallback, as Linux)."""
    pair = Pair(tamper=_strip_dss(data_only=False))
    client, server = _open(pair)
    data = _payload(60_000)
    assert hashlib.sha256(transfer(pair, client, server, data)).digest() == hashlib.sha256(data).digest()
    assert client.mode == server.mode == "fallback"
    assert client.counters["MPCapableSYNACKRX"] == 1 and server.counters["MPCapableACKRX"] == 1
    assert client.counters["MPCapableDataFallback"] == 1 and client.counters["DssFallback"] == 0
    assert server.counters["DssFallback"] == 1
    assert client.counters["InfiniteMapTx"] == 1


def test_dss_stripped_on_data_after_full_establishment_is_a_dss_fallback() -> None:
    """strip_dss_data once a data ACK was seen: the sender's fallback is DssFallback, not the
    handshake-time MPCapableDataFallback."""
    pair = Pair(tamper=None)
    client, server = _open(pair, warm=True)  # one byte through with DSS: fully established
    pair.tamper = _strip_dss(data_only=True)
    data = _payload(60_000)
    assert transfer(pair, client, server, data) == data
    assert client.mode == server.mode == "fallback"
    assert server.counters["DssFallback"] == 1
    assert client.counters["DssFallback"] == 1 and client.counters["InfiniteMapTx"] == 1
    assert client.counters["MPCapableDataFallback"] == 0


def test_join_with_mp_join_stripped_is_counted_tried_and_reset() -> None:
    """strip_mp_join: the join's SYN/ACK comes back without MP_JOIN; the client resets that
    subflow (MPRstTx) and the transfer goes on over the first one."""
    pair = Pair(client_addresses=["10.0.0.1", "10.0.0.2"], tamper=_strip_mp_join,
                client_config=StackConfig(scheduler="round_robin"))
    client, server = _open(pair, warm=True)
    data = _payload(100_000)
    assert transfer(pair, client, server, data) == data
    assert client.counters["MPJoinSynTx"] == 1
    assert client.counters["MPRstTx"] == 1 and client.counters["MPJoinSynAckRx"] == 0
    assert client.mode == "mptcp"
    assert client.stats()["outcome"] == "subflow-rejected"
    assert [s for s in client.live_subflows if not s.tcp.is_closed and s.is_join] == []
