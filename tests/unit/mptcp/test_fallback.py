"""RFC 8684 3.7 fallbacks and failures provoked by middlebox-like tampering."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools

import pytest

from testbed.mptcp.config import StackConfig
from testbed.wire.types import (
    RST,
    Dss,
    MpFail,
    MpFastclose,
    MpJoinSyn,
    MptcpOption,
    MpTcpRst,
    Packet,
    RemoveAddr,
)

from .harness import Pair
from .test_transfer import _open, _payload, transfer


def _strip_dss_on_data(only_address: str | None = None):
    def tamper(packet: Packet, where: str) -> list[Packet]:
        if packet.tcp.payload and (only_address is None or only_address in (packet.src,
                                                                            packet.dst)):
            packet.tcp.options = [o for o in packet.tcp.options if type(o) is not Dss]
        return [packet]
    return tamper


def test_dss_stripped_on_data_falls_back_with_infinite_mapping() -> None:
    pair = Pair(tamper=_strip_dss_on_data())
    client, server = _open(pair, warm=True)
    data = _payload(80_000)
    got = transfer(pair, client, server, data)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert server.mode == "fallback" and client.mode == "fallback"
    assert server.stats()["outcome"] == "fallback-infinite-map"
    assert client.stats()["outcome"] == "fallback-infinite-map"
    assert server.counters["DSSNoMatchTCP"] == 1 or client.counters["InfiniteMapTx"] == 1
    back = _payload(30_000, 9)
    assert transfer(pair, server, client, back) == back  # continues as plain TCP


def test_dss_stripped_on_join_subflow_resets_it_with_reason_6() -> None:
    pair = Pair(client_addresses=["10.0.0.1", "10.0.0.2"],
                tamper=_strip_dss_on_data("10.0.0.2"),
                client_config=StackConfig(scheduler="round_robin"))
    client, server = _open(pair, warm=True)
    data = _payload(200_000)
    got = transfer(pair, client, server, data)
    assert got == data
    resets = [p for _, _, p in pair.sent if p.tcp.flags & RST]
    assert any(p.tcp.find(MpTcpRst) is not None and p.tcp.find(MpTcpRst).reason == 6
               for p in resets)
    assert client.mode == "mptcp"
    assert client.stats()["outcome"] == "subflow-rejected"


def _corrupt_once(address: str | None = None, after: float = 0.0):
    state = {"done": False}

    def tamper(packet: Packet, where: str) -> list[Packet]:
        if (not state["done"] and where == "c2s" and len(packet.tcp.payload) > 10
                and (address is None or packet.src == address) and tamper.now() >= after):
            payload = bytearray(packet.tcp.payload)
            payload[5] ^= 0xFF  # an ALG rewriting payload
            packet.tcp.payload = bytes(payload)
            state["done"] = True
        return [packet]

    tamper.now = lambda: 0.0
    return tamper


def _alg_edit_once(after_bytes: int = 20_000):
    """An ALG rewriting one byte of the client's stream once, in the first data segment at
    least `after_bytes` into the subflow (past the first mapping). Remembers the segment's
    original payload so a test can build the stream plain TCP through it delivers."""
    state: dict = {"original": None, "offset": lambda packet: 0}

    def tamper(packet: Packet, where: str) -> list[Packet]:
        payload = packet.tcp.payload
        if (state["original"] is None and where == "c2s" and len(payload) > 10
                and state["offset"](packet) >= after_bytes):
            state["original"] = payload
            edited = bytearray(payload)
            edited[5] ^= 0xFF
            packet.tcp.payload = bytes(edited)
        return [packet]

    tamper.state = state
    return tamper


def _alg_edited(data: bytes, edit) -> bytes:
    original = edit.state["original"]
    assert original is not None, "the ALG never saw a segment to edit"
    at = data.find(original) + 5
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


def _checksum_pair(tamper, edit) -> Pair:
    config = StackConfig(checksum=True)
    pair = Pair(client_config=config, server_config=config, tamper=tamper)

    def offset(packet: Packet) -> int:  # the client subflow's relative sequence number
        subflow = pair.client.connections[0].live_subflows[0].tcp
        return (packet.tcp.seq - subflow.iss) & 0xFFFFFFFF

    edit.state["offset"] = offset
    return pair


def test_checksum_failure_single_subflow_delivers_the_stream_the_alg_left() -> None:
    """RFC 8684 3.7, one subflow: the receiver sends MP_FAIL, the sender answers with MP_FAIL
    and an infinite mapping acting from the last DATA_ACKed byte, and from then on the
    connection is plain TCP: the receiver gets exactly what TCP through the ALG delivers."""
    edit = _alg_edit_once()
    pair = _checksum_pair(edit, edit)
    client, server = _open(pair, warm=True)
    data = _payload(200_000)
    got = transfer(pair, client, server, data)
    assert got == _alg_edited(data, edit) and got != data
    assert server.counters["DataCsumErr"] == 1
    assert server.counters["MPFailTx"] >= 1 and client.counters["MPFailRx"] >= 1
    assert client.counters["MPFailTx"] == 1 and server.counters["MPFailRx"] == 1  # the answer
    assert client.counters["InfiniteMapTx"] == 1 and server.counters["InfiniteMapRx"] == 1
    assert client.mode == server.mode == "fallback"
    assert client.stats()["outcome"] == server.stats()["outcome"] == "mp-fail"
    [failed_dsn] = {o.dsn for o in pair.sent_options("s2c", MpFail)}
    [infinite] = [o for o in pair.sent_options("c2s", Dss) if o.data_len == 0]
    # retroactive: from at or before the failed mapping, on the same line of (subflow
    # offset, DSN) as every mapping before it; the sender re-sent nothing
    assert infinite.dsn <= failed_dsn
    mapped = [o for o in pair.sent_options("c2s", Dss) if o.data_len and o.subflow_seq]
    assert {(o.dsn - o.subflow_seq) & 0xFFFFFFFF for o in mapped} == {
        (infinite.dsn - infinite.subflow_seq) & 0xFFFFFFFF}
    assert client.live_subflows[0].tcp.bytes_sent < len(data) + 20_000
    back = _payload(30_000, 9)
    assert transfer(pair, server, client, back) == back  # plain TCP both ways


def test_checksum_failure_receiver_takes_a_linux_style_infinite_mapping() -> None:
    """Linux's sender puts the infinite mapping on its next new data segment with that
    segment's own DSN and subflow sequence number: the receiver, mapping the subflow's
    bytes linearly since the failure, delivers the same stream."""
    edit = _alg_edit_once()

    def tamper(packet: Packet, where: str) -> list[Packet]:
        out = edit(packet, where)
        if where == "c2s" and packet.tcp.payload:
            options = []
            for option in packet.tcp.options:
                if type(option) is Dss and option.data_len == 0:
                    offset = edit.state["offset"](packet)
                    shift = (offset - option.subflow_seq) & 0xFFFFFFFF
                    option = dataclasses.replace(option, subflow_seq=offset,
                                                 dsn=option.dsn + shift)
                options.append(option)
            packet.tcp.options = options
        return out

    pair = _checksum_pair(tamper, edit)
    client, server = _open(pair, warm=True)
    data = _payload(200_000)
    got = transfer(pair, client, server, data)
    assert got == _alg_edited(data, edit)
    assert server.counters["InfiniteMapRx"] == 1 and server.stats()["outcome"] == "mp-fail"


def test_a_lost_mp_fail_is_repeated_on_the_next_acks() -> None:
    """The ACK carrying MP_FAIL is lost (a pure ACK is never retransmitted): the receiver
    repeats it on its next ACKs, at most MP_FAIL_SENDS times, until the sender answers."""
    edit = _alg_edit_once()
    dropped: list[Packet] = []

    def tamper(packet: Packet, where: str) -> list[Packet]:
        if where == "s2c" and packet.tcp.find(MpFail) is not None and not dropped:
            dropped.append(packet)
            return []
        return edit(packet, where)

    pair = _checksum_pair(tamper, edit)
    client, server = _open(pair, warm=True)
    data = _payload(200_000)
    got = transfer(pair, client, server, data)
    assert dropped and got == _alg_edited(data, edit)
    assert 2 <= server.counters["MPFailTx"] <= 3 and client.counters["MPFailRx"] >= 1
    assert client.counters["InfiniteMapTx"] == 1


def test_checksum_negotiated_when_either_side_asks() -> None:
    pair = Pair(server_config=StackConfig(checksum=True))
    client, server = _open(pair, warm=True)
    assert client.checksum and server.checksum
    data = _payload(20_000)
    assert transfer(pair, client, server, data) == data
    assert all(o.checksum is not None for o in pair.sent_options("c2s", Dss)
               if o.data_len)


@pytest.mark.parametrize("failing", ["10.0.0.2", "10.0.0.1"])  # the join, the initial subflow
def test_checksum_failure_with_two_subflows_resets_that_subflow(failing: str) -> None:
    """RFC 8684 3.7, several subflows: RST with MP_FAIL on the failing one, its data sent
    again on the other: the original stream arrives."""
    config = StackConfig(checksum=True, scheduler="round_robin")
    tamper = _corrupt_once(failing, after=0.1)
    pair = Pair(client_addresses=["10.0.0.1", "10.0.0.2"], client_config=config,
                server_config=config, tamper=tamper)
    tamper.now = lambda: pair.now
    client, server = _open(pair, warm=True)
    pair.run(0.1)
    data = _payload(300_000)
    got = transfer(pair, client, server, data)
    assert got == data
    assert server.counters["DataCsumErr"] == 1 and server.counters["MPFailTx"] == 1
    rst = [p for _, d, p in pair.sent if d == "s2c" and p.tcp.flags & RST]
    assert rst and rst[0].tcp.find(MpFail) is not None
    assert client.mode == "mptcp"
    assert client.counters["Reinjected"] >= 1


def _forged_ack(pair: Pair, server_side_conn, key: int) -> Packet:
    """An in-window ACK from the client to the server carrying MP_FASTCLOSE(key)."""
    from testbed.wire.types import ACK, MpFastclose, TcpSegment
    client_subflow = pair.client.connections[0].live_subflows[0].tcp
    return Packet(src=client_subflow.local_address, dst=client_subflow.remote_address,
                  tcp=TcpSegment(src_port=client_subflow.local_port,
                                 dst_port=client_subflow.remote_port,
                                 seq=(client_subflow.iss + client_subflow.snd_nxt) & 0xFFFFFFFF,
                                 ack=(client_subflow.irs + client_subflow.rcv.next) & 0xFFFFFFFF,
                                 flags=ACK, window=1000, options=[MpFastclose(key)]))


def test_fastclose_with_wrong_key_is_ignored_and_right_key_honoured() -> None:
    pair = Pair()
    _, server = _open(pair, warm=True)
    pair.server.receive_packet(_forged_ack(pair, server, server.local_key ^ 1), pair.now)
    assert server.counters["MPFastcloseRxIgnored"] == 1
    assert server.closed_reason is None
    pair.server.receive_packet(_forged_ack(pair, server, server.local_key), pair.now)
    assert server.counters["MPFastcloseRx"] == 1
    assert server.closed_reason == "fastclose"


def test_abort_sends_fastclose_and_peer_closes() -> None:
    pair = Pair()
    client, server = _open(pair, warm=True)
    client.abort(pair.now)
    pair.run(0.1)
    assert client.counters["MPFastcloseTx"] == 1
    assert server.counters["MPFastcloseRx"] == 1
    assert pair.events["server"][-2].reason == "fastclose" or any(
        getattr(e, "reason", None) == "fastclose" for e in pair.events["server"])


def test_a_lost_fastclose_rst_is_sent_again_when_the_peer_speaks() -> None:
    """Option R of RFC 8684 3.5 sends the RST once; lost (a full queue drops it), the peer's
    connection stays open. What the peer sends next on that subflow is answered with the RST
    and MP_FASTCLOSE again, at the sequence number the peer acknowledges (RFC 5961 exact)."""
    lost: list[Packet] = []

    def drop_first_rst(packet: Packet, where: str) -> list[Packet]:
        if packet.tcp.flags & RST and not lost:
            lost.append(packet)
            return []
        return [packet]

    pair = Pair(tamper=drop_first_rst)
    client, server = _open(pair, warm=True)
    client.abort(pair.now)
    pair.run(0.1)
    assert lost and server.counters["MPFastcloseRx"] == 0 and server.closed_reason is None
    server.send(b"still there?")  # anything the server sends reaches the closed four-tuple
    pair.run(0.5)
    assert pair.client.counters["MPFastcloseRstResent"] >= 1
    assert server.counters["MPFastcloseRx"] == 1
    assert server.closed_reason == "fastclose"


def test_a_lost_fastclose_rst_is_repeated_with_backoff_when_the_peer_is_silent() -> None:
    """The peer has nothing to send (a receiver that acknowledged everything): only our own
    timer can repeat the RST with MP_FASTCLOSE. After one RTO the repeat arrives."""
    lost: list[Packet] = []

    def drop_first_rst(packet: Packet, where: str) -> list[Packet]:
        if packet.tcp.flags & RST and not lost:
            lost.append(packet)
            return []
        return [packet]

    pair = Pair(tamper=drop_first_rst)
    client, server = _open(pair, warm=True)
    rto = client.live_subflows[0].tcp.rtt.rto
    aborted_at = pair.now
    client.abort(pair.now)
    pair.run(rto * 0.9)
    assert lost and server.closed_reason is None  # nothing yet: the RST was dropped
    pair.run(rto * 0.2)
    assert pair.client.counters["MPFastcloseRstRepeated"] == 1
    assert server.counters["MPFastcloseRx"] == 1 and server.closed_reason == "fastclose"
    repeats = [(t, p) for t, d, p in pair.sent if d == "c2s" and p.tcp.flags & RST]
    assert repeats[1][0] - aborted_at >= rto
    assert repeats[1][1].tcp.find(MpFastclose) == MpFastclose(client.remote_key)


def test_a_backlog_of_acks_on_a_fastclosed_subflow_gets_one_rst_not_a_flood() -> None:
    """Hundreds of the peer's ACKs queued before our RST (measured: 349 RSTs in one run of
    test_fastclose_from_python) are answered once per acknowledgment number and RTO."""
    from testbed.wire.types import ACK, TcpSegment
    pair = Pair(tamper=lambda packet, where: [] if packet.tcp.flags & RST else [packet])
    client, server = _open(pair, warm=True)
    theirs = server.live_subflows[0].tcp
    ours = client.live_subflows[0].tcp
    client.abort(pair.now)
    pair.run(0.01)
    before = pair.client.counters["MPFastcloseRstResent"]
    for ack_offset in (ours.snd_nxt - 5, ours.snd_nxt - 5, ours.snd_nxt - 5, ours.snd_nxt):
        pair.client.receive_packet(Packet(
            src=theirs.local_address, dst=theirs.remote_address,
            tcp=TcpSegment(src_port=theirs.local_port, dst_port=theirs.remote_port,
                           seq=(theirs.iss + theirs.snd_nxt) & 0xFFFFFFFF,
                           ack=(ours.iss + ack_offset) & 0xFFFFFFFF, flags=ACK, window=1000)),
            pair.now)
    rsts = [p for p in pair.client.packets_to_send(pair.now) if p.tcp.flags & RST]
    assert pair.client.counters["MPFastcloseRstResent"] - before == len(rsts) == 2
    assert [r.tcp.seq for r in rsts] == [(ours.iss + ours.snd_nxt - 5) & 0xFFFFFFFF,
                                         (ours.iss + ours.snd_nxt) & 0xFFFFFFFF]


def test_fastclose_rst_repeats_are_bounded() -> None:
    """RFC 8684 3.5: retransmissions of MP_FASTCLOSE limited (3 recommended), with backoff."""
    pair = Pair(tamper=lambda packet, where: [] if packet.tcp.flags & RST else [packet])
    client, _server = _open(pair, warm=True)
    rto = client.live_subflows[0].tcp.rtt.rto
    client.abort(pair.now)
    pair.run(rto * 20)
    times = [t for t, d, p in pair.sent if d == "c2s" and p.tcp.find(MpFastclose) is not None]
    assert len(times) == 4
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[1] > gaps[0] * 1.9 and gaps[2] > gaps[1] * 1.9
    assert not pair.client.resets_pending() and pair.client.get_timer() is None


def test_once_fallen_back_never_return() -> None:
    pair = Pair(tamper=_strip_dss_on_data())
    client, server = _open(pair, warm=True)
    transfer(pair, client, server, _payload(20_000))
    assert client.mode == "fallback"
    with_join = dataclasses.replace  # noqa: F841 - kept for readability of the intent
    assert not client.can_open_subflow()
    sent_before = len(pair.sent)
    transfer(pair, client, server, _payload(20_000, 5))
    assert not any(type(o) is Dss and o.data_len for _, _, p in pair.sent[sent_before:]
                   for o in p.tcp.options)
    assert not pair.sent_options("c2s", MpJoinSyn)


def _coalesce_pairs(address: str, after: float):
    """Merges each c2s data segment from `address` with the next one, keeping the first's
    options (an LRO-like box): the second segment's bytes arrive without their mapping."""
    state: dict[str, object] = {"held": None}

    def tamper(packet: Packet, where: str) -> list[Packet]:
        tcp = packet.tcp
        if where != "c2s" or packet.src != address or not tcp.payload or tamper.now() < after:
            return [packet]
        held = state["held"]
        if held is None:
            state["held"] = packet
            return []
        state["held"] = None
        assert isinstance(held, Packet)
        if (held.tcp.seq + len(held.tcp.payload)) & 0xFFFFFFFF != tcp.seq:
            return [held, packet]  # not contiguous: pass both unchanged
        merged = dataclasses.replace(held.tcp, payload=held.tcp.payload + tcp.payload,
                                     ack=tcp.ack, window=tcp.window, checksum=None)
        return [dataclasses.replace(held, tcp=merged)]

    tamper.now = lambda: 0.0
    return tamper


def test_unmapped_data_on_the_initial_subflow_after_joins_resets_only_that_subflow() -> None:
    """With joins up, infinite-mapping fallback is no longer allowed (RFC 8684 3.7): bytes
    without a mapping on the initial subflow reset that subflow alone (as Linux does, and as
    for a join subflow); its data is reinjected and the connection carries on."""
    tamper = _coalesce_pairs("10.0.0.1", after=0.3)
    pair = Pair(client_addresses=["10.0.0.1", "10.0.0.2"], tamper=tamper,
                client_config=StackConfig(scheduler="round_robin"))
    tamper.now = lambda: pair.now
    client, server = _open(pair, warm=True)
    pair.run(0.3)
    assert len(client.live_subflows) == 2 and not server.fallback.allow_infinite_fallback
    data = _payload(300_000)
    got = transfer(pair, client, server, data)
    assert got == data
    assert server.counters["SubflowResetMiddlebox"] == 1
    resets = [(p.dst, p.tcp.find(MpTcpRst)) for _, d, p in pair.sent
              if d == "s2c" and p.tcp.flags & RST and p.tcp.find(MpTcpRst) is not None]
    assert [(dst, option.reason) for dst, option in resets] == [("10.0.0.1", 6)]
    assert client.mode == server.mode == "mptcp"
    assert client.counters["Reinjected"] >= 1
    assert client.stats()["outcome"] == "subflow-rejected"


def test_a_signalling_ack_without_dss_is_not_a_stripped_dss() -> None:
    """Linux sends ADD_ADDR (and other signals) on a pure ACK without its DSS, and that ACK can
    acknowledge new data: the options evidently pass, so the sender must not fall back. Each
    of the server's pure ACKs here carries REMOVE_ADDR (an id nobody uses) instead of its DSS;
    the DSS-carrying data segments still bring data ACKs now and then."""
    def dss_replaced_on_server_acks(packet: Packet, where: str) -> list[Packet]:
        if where == "s2c" and not packet.tcp.payload and not packet.tcp.flags & RST:
            options = [o for o in packet.tcp.options if type(o) is not Dss]
            if len(options) < len(packet.tcp.options):
                packet.tcp.options = [*options, RemoveAddr(address_ids=(200,))]
        return [packet]

    pair = Pair(tamper=None)
    client, server = _open(pair, warm=True)
    pair.tamper = dss_replaced_on_server_acks
    data = _payload(80_000)
    assert transfer(pair, client, server, data) == data
    assert client.mode == "mptcp" and server.mode == "mptcp"
    assert client.counters["DssFallback"] == 0 and client.counters["InfiniteMapTx"] == 0
    assert client.counters["RmAddr"] > 0  # the signal was seen, on ACKs that acknowledged data


def test_stripper_switched_on_mid_transfer_resets_the_join_and_the_data_ack_catches_up() -> None:
    """The soak's case without its NAT outage: both subflows carry data, then a box on the
    join's path starts stripping MPTCP options. One end resets that subflow (reason 6),
    the sender reinjects what it carried and never saw DATA_ACKed, and the data ACK reaches
    the end of the stream on the initial subflow alone."""
    state = {"on_at": 1e9}

    def tamper(packet: Packet, where: str) -> list[Packet]:
        if pair.now >= state["on_at"] and "10.0.0.2" in (packet.src, packet.dst):
            packet.tcp.options = [o for o in packet.tcp.options
                                  if not isinstance(o, MptcpOption)]
        return [packet]

    pair = Pair(client_addresses=["10.0.0.1", "10.0.0.2"], tamper=tamper,
                client_config=StackConfig(scheduler="round_robin"))
    client, server = _open(pair, warm=True)
    pair.run(0.3)
    assert len(client.live_subflows) == 2
    data = _payload(2_000_000)
    state["on_at"] = pair.now + 0.05  # mid-transfer: a few round trips in
    got = transfer(pair, client, server, data)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    # whichever end notices first (the sender: an ACK of its data without a DSS) resets it
    assert client.counters["SubflowResetMiddlebox"] + server.counters["SubflowResetMiddlebox"] == 1
    assert client.counters["Reinjected"] >= 1
    pair.run_until(lambda: client.data.snd_data_una == client.data.send_end, 5.0)
    assert [c.tcp.local_address for c in client.live_subflows] == ["10.0.0.1"]
