"""nat: mapping kinds, filtering, idle timeout, port allocation from the seeded rng."""

from __future__ import annotations

import random

from testbed.wire.types import SYN, AddAddr
from tests.unit.middleboxes.packets import DOWN, UP, build, packet

PUBLIC = "198.51.100.1"
SERVER2 = "10.0.9.9"


def nat(**params):
    return build("nat", public_address=PUBLIC, **params)


def outbound(box, now=0.0, client="10.0.0.1", client_port=40000, server="10.0.1.1",
             server_port=5201, **kw):
    p = packet(UP, client=client, client_port=client_port, server=server,
               server_port=server_port, **kw)
    return box.process(p, UP, now)


def inbound(box, public_port, now=0.0, server="10.0.1.1", server_port=5201, **kw):
    p = packet(DOWN, client=PUBLIC, client_port=public_port, server=server,
               server_port=server_port, **kw)
    return box.process(p, DOWN, now)


def test_translates_both_ways_with_a_port_from_the_seeded_rng() -> None:
    box = nat(seed=4)
    expected_port = random.Random(4).randint(1024, 65535)
    [out] = outbound(box, flags=SYN, options=[AddAddr(1, "10.0.0.1", hmac=7)])
    assert (out.src, out.tcp.src_port, out.dst, out.tcp.dst_port) == (
        PUBLIC, expected_port, "10.0.1.1", 5201)
    assert out.tcp.options == [AddAddr(1, "10.0.0.1", hmac=7)]  # a NAT does not read options
    [back] = inbound(box, expected_port)
    assert (back.src, back.tcp.src_port, back.dst, back.tcp.dst_port) == (
        "10.0.1.1", 5201, "10.0.0.1", 40000)
    assert box.owned_addresses() == [PUBLIC]
    assert box.counters.as_dict() == {"seen": 2, "changed": 2, "dropped": 0, "injected": 0}


def test_endpoint_independent_mapping_reuses_the_port_for_new_remotes() -> None:
    box = nat(filtering="endpoint_independent")
    [first] = outbound(box)
    [second] = outbound(box, server=SERVER2, server_port=80)
    assert first.tcp.src_port == second.tcp.src_port
    [other_host] = outbound(box, client="10.0.0.2")
    assert other_host.tcp.src_port != first.tcp.src_port
    assert len(box.mappings()) == 2


def test_symmetric_mapping_allocates_per_remote_endpoint() -> None:
    box = nat(mapping="address_and_port_dependent")
    [first] = outbound(box)
    [same] = outbound(box)
    [other_port] = outbound(box, server_port=5202)
    [other_addr] = outbound(box, server=SERVER2)
    ports = {first.tcp.src_port, other_port.tcp.src_port, other_addr.tcp.src_port}
    assert same.tcp.src_port == first.tcp.src_port and len(ports) == 3
    [back] = inbound(box, other_port.tcp.src_port, server_port=5202)
    assert (back.dst, back.tcp.dst_port) == ("10.0.0.1", 40000)
    assert inbound(box, other_port.tcp.src_port, server_port=5201) == []  # APDF


def test_filtering_kinds() -> None:
    for filtering, allowed in (("address_and_port_dependent", [True, False, False]),
                               ("address_dependent", [True, True, False]),
                               ("endpoint_independent", [True, True, True])):
        box = nat(filtering=filtering)
        [out] = outbound(box)
        port = out.tcp.src_port
        results = [bool(inbound(box, port)), bool(inbound(box, port, server_port=9999)),
                   bool(inbound(box, port, server=SERVER2))]
        assert results == allowed, filtering
        assert box.counters.dropped == allowed.count(False)


def test_unsolicited_and_misaddressed_inbound_packets_are_dropped() -> None:
    box = nat(log_changes=True)
    [out] = outbound(box)
    unmapped = 1024 if out.tcp.src_port != 1024 else 1025
    assert inbound(box, unmapped, flags=SYN) == []
    direct = packet(DOWN, client="10.0.0.1", client_port=40000)  # to the private address
    assert box.process(direct, DOWN, 0.0) == []
    changes = [entry["change"] for entry in box.change_log.entries]
    assert changes[1:] == [f"dropped: no mapping for port {unmapped}",
                           "dropped: not addressed to the public address"]


def test_idle_timeout_expires_mapping_and_rebinds_to_a_new_port() -> None:
    box = nat(idle_timeout_s=30.0, seed=11)
    [first] = outbound(box, now=0.0)
    port = first.tcp.src_port
    assert inbound(box, port, now=29.0)  # refreshes (inbound_refresh)
    assert outbound(box, now=58.0)[0].tcp.src_port == port
    assert inbound(box, port, now=87.9)
    assert inbound(box, port, now=117.9) == []  # idle for exactly 30 s: expired
    assert box.expired == 1 and box.mappings() == []
    [rebound] = outbound(box, now=118.0)
    assert rebound.tcp.src_port != port


def test_without_inbound_refresh_only_outbound_traffic_keeps_the_mapping() -> None:
    box = nat(idle_timeout_s=10.0, inbound_refresh=False)
    [first] = outbound(box, now=0.0)
    assert inbound(box, first.tcp.src_port, now=9.0)
    assert inbound(box, first.tcp.src_port, now=10.0) == []


def test_expiry_keeps_recently_used_mappings() -> None:
    box = nat(idle_timeout_s=10.0)
    [a] = outbound(box, now=0.0, client_port=1)
    [b] = outbound(box, now=1.0, client_port=2)
    outbound(box, now=9.0, client_port=1)  # a is now the most recently used
    assert inbound(box, b.tcp.src_port, now=11.0) == []
    assert inbound(box, a.tcp.src_port, now=11.0)
    assert [m.private_port for m in box.mappings()] == [1]


def test_port_preservation_and_exhaustion() -> None:
    box = nat(port_preservation=True, port_min=40000, port_max=40001, idle_timeout_s=5.0)
    [kept] = outbound(box, client="10.0.0.1", client_port=40000)
    assert kept.tcp.src_port == 40000
    [moved] = outbound(box, client="10.0.0.2", client_port=40000)
    assert moved.tcp.src_port == 40001
    assert outbound(box, client="10.0.0.3", client_port=40000) == []
    assert box.exhausted == 1 and box.counters.dropped == 1
    [later] = outbound(box, now=6.0, client="10.0.0.3", client_port=40000)
    assert later.tcp.src_port == 40000  # the expired mappings freed their ports


def test_allocation_finds_the_last_free_port_by_scanning() -> None:
    box = nat(port_min=2000, port_max=2063)
    ports = {outbound(box, client_port=p)[0].tcp.src_port for p in range(1, 65)}
    assert ports == set(range(2000, 2064))


def test_ipv6_packets_pass_a_nat44_unchanged_and_uncounted() -> None:
    from testbed.wire.ipv6 import Ipv6Packet

    box = nat()
    v6 = Ipv6Packet(src="fd00::1", dst="fd00:1::1", tcp=packet(UP, flags=SYN).tcp)
    assert box.process(v6, UP, 0.0) == [v6] and box.process(v6, DOWN, 0.0) == [v6]
    assert box.counters.seen == 0 and box.mappings() == []
