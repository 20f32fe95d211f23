"""Signalling (ADD_ADDR, REMOVE_ADDR, MP_PRIO), reinjection, schedulers and path managers."""

from __future__ import annotations

import pytest

from testbed.mptcp.config import StackConfig
from testbed.mptcp.scheduler import (
    SCHEDULERS,
    LowestRttScheduler,
    RoundRobinScheduler,
    create_scheduler,
    eligible_subflows,
)
from testbed.mptcp.tcp_state import TcpState
from testbed.wire.types import AddAddr, Dss, MpPrio, Packet, RemoveAddr

from .harness import Pair
from .test_transfer import _open, _payload, transfer

TWO_CLIENT = ["10.0.0.1", "10.0.0.2"]
TWO_SERVER = ["10.0.1.1", "10.0.1.2"]


def _data_dsns_by_source(pair: Pair) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = {}
    for _, direction, packet in pair.sent:
        if direction == "c2s" and packet.tcp.payload:
            dss = packet.tcp.find(Dss)
            if dss is not None and dss.dsn is not None:
                seen.setdefault(packet.src, []).append(dss.dsn)
    return seen


def test_add_addr_is_echoed_and_client_meshes_to_it() -> None:
    pair = Pair(server_addresses=TWO_SERVER,
                server_config=StackConfig(path_manager="announce"))
    client, server = _open(pair, warm=True)
    pair.run(0.5)
    announced = [o for o in pair.sent_options("s2c", AddAddr) if not o.echo]
    assert announced[0].address == "10.0.1.2" and announced[0].hmac is not None
    echoes = [o for o in pair.sent_options("c2s", AddAddr) if o.echo]
    assert echoes[0].address_id == announced[0].address_id and echoes[0].hmac is None
    assert client.counters["AddAddr"] == 1 and server.counters["EchoAdd"] == 1
    assert "AddressAnnounced" in pair.event_types("client")
    remotes = sorted(s.tcp.remote_address for s in client.live_subflows)
    assert remotes == ["10.0.1.1", "10.0.1.2"]  # fullmesh client joined the new address
    assert server.signalling.announced == {}


def test_unechoed_add_addr_is_retransmitted_after_timeout() -> None:
    def drop_echo(packet: Packet, where: str) -> list[Packet]:
        packet.tcp.options = [o for o in packet.tcp.options
                              if not (type(o) is AddAddr and o.echo)]
        return [packet]

    config = StackConfig(path_manager="announce", add_addr_timeout_s=2.0)
    pair = Pair(server_addresses=TWO_SERVER, server_config=config, tamper=drop_echo)
    _, server = _open(pair, warm=True)
    pair.run(5.0)
    times = [t for t, d, p in pair.sent if d == "s2c"
             for o in p.tcp.options if type(o) is AddAddr]
    assert len(times) == 2  # the original and one retransmission (Linux resends once)
    assert times[1] - times[0] == pytest.approx(2.0)
    assert server.counters["AddAddrTx"] == 2


def test_add_addr_with_bad_hmac_is_dropped() -> None:
    def forge(packet: Packet, where: str) -> list[Packet]:
        packet.tcp.options = [AddAddr(o.address_id, o.address, o.port, 1234, o.echo)
                              if type(o) is AddAddr else o for o in packet.tcp.options]
        return [packet]

    pair = Pair(server_addresses=TWO_SERVER,
                server_config=StackConfig(path_manager="announce"), tamper=forge)
    client, _ = _open(pair, warm=True)
    pair.run(0.5)
    assert client.counters["AddAddrDrop"] == 1 and client.counters["AddAddr"] == 0
    assert len(client.live_subflows) == 1


def test_remove_addr_closes_subflows_and_reinjects() -> None:
    blackhole = {"on": False}

    def tamper(packet: Packet, where: str) -> list[Packet]:
        if blackhole["on"] and "10.0.0.2" in (packet.src, packet.dst) and packet.tcp.payload:
            return []
        return [packet]

    pair = Pair(client_addresses=TWO_CLIENT, tamper=tamper,
                client_config=StackConfig(scheduler="round_robin"))
    client, server = _open(pair, warm=True)
    pair.run(0.2)
    assert len(client.live_subflows) == 2
    data = _payload(400_000)
    client.send(data)
    pair.run(0.05)
    blackhole["on"] = True  # path 2 dies with data in flight
    client.remove_address("10.0.0.2", now=pair.now)
    got = bytearray()
    pair.run_until(lambda: got.extend(server.receive()) or len(got) == len(data), 30.0)
    assert bytes(got) == data
    assert server.counters["RmAddr"] == 1
    assert client.counters["Reinjected"] >= 1
    assert [s.tcp.local_address for s in client.live_subflows] == ["10.0.0.1"]
    assert pair.sent_options("c2s", RemoveAddr)[0].address_ids == (1,)


def test_mp_prio_makes_peer_treat_subflow_as_backup() -> None:
    pair = Pair(client_addresses=TWO_CLIENT)
    client, server = _open(pair, warm=True)
    pair.run(0.2)
    join = client.live_subflows[1]
    client.set_backup(join, True, now=pair.now)
    pair.run(0.1)
    assert pair.sent_options("c2s", MpPrio) == [MpPrio(backup=True)]
    assert client.counters["MPPrioTx"] == 1 and server.counters["MPPrioRx"] == 1
    server_join = next(s for s in server.live_subflows if s.is_join)
    assert server_join.backup
    before = server_join.tcp.bytes_sent
    data = _payload(200_000)
    assert transfer(pair, server, client, data) == data
    assert server_join.tcp.bytes_sent == before  # backup unused while the other path works


def test_backup_used_when_no_regular_subflow_is_usable() -> None:
    pair = Pair(client_addresses=TWO_CLIENT)
    client, _ = _open(pair, warm=True)
    pair.run(0.2)
    initial, join = client.live_subflows
    join.backup_local = True
    assert eligible_subflows([initial, join]) == [initial]
    initial.data_ready = False
    assert eligible_subflows([initial, join]) == [join]


def test_stale_subflow_is_skipped_while_another_is_active() -> None:
    pair = Pair(client_addresses=TWO_CLIENT)
    client, _ = _open(pair, warm=True)
    pair.run(0.2)
    initial, join = client.live_subflows
    initial.stale = True
    assert eligible_subflows([initial, join]) == [join]
    join.backup_local = True  # a stale regular subflow gives way to an active backup
    assert eligible_subflows([initial, join]) == [join]
    join.stale = True  # all stale: the backup rule alone decides again
    assert eligible_subflows([initial, join]) == [initial]


def test_round_robin_alternates_and_redundant_duplicates() -> None:
    pair = Pair(client_addresses=TWO_CLIENT, client_config=StackConfig(scheduler="round_robin"))
    client, server = _open(pair, warm=True)
    pair.run(0.2)
    assert transfer(pair, client, server, _payload(100_000)) == _payload(100_000)
    by_source = _data_dsns_by_source(pair)
    assert len(by_source["10.0.0.1"]) > 10 and len(by_source["10.0.0.2"]) > 10

    pair = Pair(client_addresses=TWO_CLIENT, client_config=StackConfig(scheduler="redundant"))
    client, server = _open(pair, warm=True)
    pair.run(0.2)
    assert transfer(pair, client, server, _payload(50_000)) == _payload(50_000)
    by_source = _data_dsns_by_source(pair)
    assert set(by_source["10.0.0.2"]) <= set(by_source["10.0.0.1"])
    assert len(set(by_source["10.0.0.2"])) > 10


def test_lowest_rtt_prefers_the_faster_path() -> None:
    pair = Pair(client_addresses=TWO_CLIENT)
    pair.path_delay["10.0.0.2"] = 0.002
    pair.path_delay["10.0.0.1"] = 0.050
    client, _ = _open(pair, warm=True)
    pair.run(0.5)
    client.send(_payload(3_000))  # three segments: all fit on the fast path
    pair.run(0.5)
    by_source = _data_dsns_by_source(pair)
    assert len(by_source.get("10.0.0.2", [])) == 3 and "10.0.0.1" not in by_source


@pytest.mark.python_core  # hands the schedulers fakes
def test_scheduler_registry_and_unit_choices() -> None:
    assert sorted(SCHEDULERS) == ["lowest_rtt", "redundant", "round_robin"]
    with pytest.raises(ValueError, match="unknown scheduler"):
        create_scheduler("blest")

    class FakeTcp:
        def __init__(self, subflow_id: int, srtt: float | None) -> None:
            self.subflow_id = subflow_id
            self.rtt = type("R", (), {"srtt": srtt, "initial_rto": 1.0})()

    class Fake:  # a SubflowContext as far as schedulers look
        def __init__(self, subflow_id: int, srtt: float | None) -> None:
            self.tcp = FakeTcp(subflow_id, srtt)

    a, b, c = Fake(0, 0.05), Fake(1, 0.01), Fake(2, None)
    assert LowestRttScheduler().select([a, b, c]) == [b]  # type: ignore[list-item]
    rr = RoundRobinScheduler()
    picks = [rr.select([a, b, c])[0].tcp.subflow_id for _ in range(4)]  # type: ignore[list-item]
    assert picks == [0, 1, 2, 0]


def test_ndiffports_opens_n_subflows_on_one_address_pair() -> None:
    pair = Pair(client_config=StackConfig(path_manager="ndiffports", ndiffports=3))
    client, server = _open(pair, warm=True)
    pair.run(0.3)
    assert len(client.live_subflows) == 3
    assert {s.tcp.local_address for s in client.live_subflows} == {"10.0.0.1"}
    assert len({s.tcp.local_port for s in client.live_subflows}) == 3
    assert transfer(pair, client, server, _payload(100_000)) == _payload(100_000)


def test_none_and_max_subflows_limit() -> None:
    pair = Pair(client_addresses=TWO_CLIENT, client_config=StackConfig(path_manager="none"))
    client, _ = _open(pair, warm=True)
    pair.run(0.3)
    assert len(client.live_subflows) == 1
    pair = Pair(client_addresses=["10.0.0.1", "10.0.0.2", "10.0.0.3"],
                client_config=StackConfig(max_subflows=2))
    client, _ = _open(pair, warm=True)
    pair.run(0.3)
    assert len(client.live_subflows) == 2
    assert all(s.tcp.state is TcpState.ESTABLISHED for s in client.live_subflows)


def test_fullmesh_server_side_refuses_beyond_its_limit() -> None:
    pair = Pair(client_addresses=["10.0.0.1", "10.0.0.2", "10.0.0.3"],
                server_config=StackConfig(max_subflows=2))
    client, server = _open(pair, warm=True)
    pair.run(0.5)
    assert len(server.live_subflows) == 2
    assert pair.server.counters["MPJoinRejected"] == 1
    assert client.stats()["outcome"] == "subflow-rejected"


def test_dead_subflow_times_out_and_its_data_is_reinjected() -> None:
    cut = {"on": False}

    def tamper(packet: Packet, where: str) -> list[Packet]:
        if cut["on"] and "10.0.0.2" in (packet.src, packet.dst):
            return []  # path 2 goes silent in both directions
        return [packet]

    config = StackConfig(scheduler="round_robin", max_retransmits=3)
    pair = Pair(client_addresses=TWO_CLIENT, client_config=config, tamper=tamper)
    client, server = _open(pair, warm=True)
    pair.run(0.2)
    data = _payload(300_000, 11)
    client.send(data)
    pair.run(0.03)
    cut["on"] = True
    got = bytearray()
    pair.run_until(lambda: got.extend(server.receive()) or len(got) == len(data), 60.0)
    assert bytes(got) == data
    # the first RTO made the subflow stale and its data went on the live one at once: the
    # transfer does not wait for the dead subflow to give up (3 backed-off RTOs later)
    assert client.counters["SubflowStale"] == 1
    assert client.counters["Reinjected"] >= 1
    assert "SubflowClosed" not in pair.event_types("client")

    def closed() -> list[str]:
        return [e.reason for e in pair.events["client"] if type(e).__name__ == "SubflowClosed"]

    pair.run_until(lambda: bool(closed()), 60.0)
    assert closed() == ["timeout"]
    stats = client.stats()
    assert stats["outcome"] == "mptcp"
    by_local = {s["local"].split(":")[0]: s for s in stats["subflows"]}
    assert by_local["10.0.0.2"]["state"] == "CLOSED"
    assert by_local["10.0.0.1"]["bytes_sent"] > 0 and by_local["10.0.0.2"]["bytes_sent"] > 0
    assert set(by_local["10.0.0.1"]) >= {"local", "remote", "bytes_sent", "bytes_received",
                                         "backup", "state"}
