"""A kernel MPTCP client with IPv6 only, through two nat64 bumps, to a kernel server with IPv4
only (Linux at both ends, real packets):

    client eth0 (fd00:10:0:1::1) --[bump1: nat64, pool 10.0.1.100]-- in0 router out0 -- server
    client eth1 (fd00:10:0:2::1) --[bump2: nat64, pool 10.0.2.100]-- in1   (IPv4)   10.0.50.2
                                                                                (+ 10.0.50.12)
The client dials [64:ff9b::10.0.50.2]; its second address is a `subflow` endpoint, the server's
10.0.50.12 a `signal` endpoint. What is measured: MP_CAPABLE through the NAT64, the join over
the second NAT64 (the server sees it from the other pool address), and what the client does
with an ADD_ADDR carrying an IPv4 address.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.ipv6_boxes.lab import TranslatorLab
from tests.integration.live_checks import live_problem

PORT = 5201
BYTES = 2_000_000
SERVER = "10.0.50.2"
DIAL = "64:ff9b::a00:3202"  # 10.0.50.2 under the well-known prefix


def _problem() -> str | None:
    return live_problem(("ip", "ethtool", "ss"))


pytestmark = [pytest.mark.root, pytest.mark.skipif(_problem() is not None, reason=str(_problem()))]


def build(lab: TranslatorLab) -> None:
    lab.veth("client", "eth0", "bump1", "left")
    lab.veth("client", "eth1", "bump2", "left")
    lab.veth("router", "in0", "bump1", "right")
    lab.veth("router", "in1", "bump2", "right")
    lab.veth("router", "out0", "server", "eth0")
    for path in (1, 2):
        lab.sh("client", "ip", "addr", "add", f"fd00:10:0:{path}::1/64", "dev", f"eth{path - 1}",
               "nodad")
        lab.sh("router", "ip", "addr", "add", f"fd00:10:0:{path}::2/64", "dev", f"in{path - 1}",
               "nodad")
        # IPv4 on the router's side only: the pool address is on-link there (the bump answers ARP)
        lab.sh("router", "ip", "addr", "add", f"10.0.{path}.2/24", "dev", f"in{path - 1}")
    lab.sh("client", "ip", "route", "add", "default", "via", "fd00:10:0:1::2", "dev", "eth0")
    lab.sh("client", "ip", "-6", "route", "add", "default", "via", "fd00:10:0:2::2", "dev", "eth1",
           "table", "102")
    lab.sh("client", "ip", "-6", "rule", "add", "from", "fd00:10:0:2::1", "table", "102")
    lab.sh("router", "sysctl", "-qw", "net.ipv4.ip_forward=1")
    lab.sh("router", "ip", "addr", "add", "10.0.50.1/24", "dev", "out0")
    lab.sh("server", "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
    for address in (SERVER, "10.0.50.12"):
        lab.sh("server", "ip", "addr", "add", f"{address}/24", "dev", "eth0")
    lab.sh("server", "ip", "route", "add", "default", "via", "10.0.50.1")
    for role in ("client", "server"):
        lab.sh(role, "sysctl", "-qw", "net.mptcp.enabled=1")
        lab.sh(role, "ip", "mptcp", "limits", "set", "subflows", "4", "add_addr_accepted", "4")
    lab.sh("client", "ip", "mptcp", "endpoint", "add", "fd00:10:0:2::1", "dev", "eth1", "subflow")
    lab.sh("server", "ip", "mptcp", "endpoint", "add", "10.0.50.12", "dev", "eth0", "signal")
    for path in (1, 2):
        lab.start_bump(f"bump{path}", "left", "right", [
            {"name": "nat64", "params": {"pool_address": f"10.0.{path}.100", "log_changes": True}}])


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with TranslatorLab(["client", "bump1", "router", "server", "bump2"],
                       tmp_path_factory.mktemp("nat64")) as lab:
        build(lab)
        result = lab.run_connection("4", DIAL, PORT, BYTES, hold_s=2.0)
        result["counters"] = {role: lab.mptcp_counters(role) for role in ("client", "server")}
        result["bumps"] = lab.stop_bumps()
        yield result


def test_the_connection_is_mptcp_through_the_nat64(measured: dict[str, Any]) -> None:
    assert measured["received"] == str(2 * BYTES), measured
    server = measured["counters"]["server"]
    assert server["MPCapableSYNRX"] == 1 and server["MPCapableACKRX"] == 1
    assert server["MPCapableFallbackACK"] == 0
    box = measured["bumps"]["bump1"]["middleboxes"][0]
    assert box["counters"]["changed"] > 0 and box["state"]["mappings"] >= 1


def test_a_join_over_the_second_nat64_reaches_the_server_from_its_pool(measured: dict[str, Any]) -> None:
    peers = {peer.rsplit(":", 1)[0] for _local, peer in measured["subflows"]}
    assert peers == {"10.0.1.100", "10.0.2.100"}, measured["subflows"]
    server = measured["counters"]["server"]
    assert server["MPJoinSynRx"] == 1 and server["MPJoinAckRx"] == 1
    assert measured["bumps"]["bump2"]["middleboxes"][0]["counters"]["changed"] > 0


def test_an_ipv4_add_addr_reaches_the_ipv6_only_client_and_is_not_joined(measured: dict[str, Any]) -> None:
    client = measured["counters"]["client"]
    server = measured["counters"]["server"]
    assert server["AddAddrTx"] == 1 and client["AddAddr"] == 1  # announced, crossed, accepted
    # Linux tries to join the announced IPv4 address and its connect fails at once (the client
    # has no IPv4 address or route); with the server's signal endpoint removed this counter
    # stays 0 and the one MPJoinSynTx is the second path's join
    assert client["MPJoinSynTxConnectErr"] == 1
    assert client["MPJoinSynTx"] == 1
    assert all(not local.startswith("10.0.50.12") for local, _peer in measured["subflows"])
