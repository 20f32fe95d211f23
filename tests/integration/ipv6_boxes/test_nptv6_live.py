"""Kernel MPTCP through the nptv6 box (Linux at both ends, real packets):

    client eth0 -- in0 router out0 --[bump: nptv6 fd00:10::/48 <-> fd00:99::/48]-- eth0 server
    fd00:10:0:1::1 (+ ::11 signal, ::12 subflow)    fd00:50::1               fd00:50::2

The server's network routes only the outside prefix (fd00:99::/48) back to the site, as the
Internet routes a provider prefix and never a ULA. What is measured: MP_CAPABLE and a join
from the client's second address through the translation, and what the server does with the
client's ADD_ADDR, which carries the untranslated inside address.
"""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path
from typing import Any

import pytest

from middleboxes.registry import build_middlebox
from tests.integration.ipv6_boxes.lab import TranslatorLab
from tests.integration.live_checks import live_problem

PORT = 5201
BYTES = 2_000_000
INSIDE, OUTSIDE = "fd00:10::/48", "fd00:99::/48"
SERVER = "fd00:50::2"


def _problem() -> str | None:
    return live_problem(("ip", "ethtool", "ss"))


pytestmark = [pytest.mark.root, pytest.mark.skipif(_problem() is not None, reason=str(_problem()))]


def build(lab: TranslatorLab) -> None:
    lab.veth("client", "eth0", "router", "in0")
    lab.veth("router", "out0", "bump", "left")
    lab.veth("bump", "right", "server", "eth0")
    for host in ("1", "11", "12"):
        lab.sh("client", "ip", "addr", "add", f"fd00:10:0:1::{host}/64", "dev", "eth0", "nodad")
    lab.sh("client", "ip", "route", "add", "default", "via", "fd00:10:0:1::2", "dev", "eth0")
    lab.sh("router", "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
    lab.sh("router", "ip", "addr", "add", "fd00:10:0:1::2/64", "dev", "in0", "nodad")
    lab.sh("router", "ip", "addr", "add", "fd00:50::1/64", "dev", "out0", "nodad")
    lab.sh("router", "ip", "route", "add", "default", "via", SERVER, "dev", "out0")
    lab.sh("server", "ip", "addr", "add", f"{SERVER}/64", "dev", "eth0", "nodad")
    lab.sh("server", "ip", "route", "add", OUTSIDE, "via", "fd00:50::1", "dev", "eth0")
    for role in ("client", "server"):
        lab.sh(role, "sysctl", "-qw", "net.mptcp.enabled=1")
        lab.sh(role, "ip", "mptcp", "limits", "set", "subflows", "4", "add_addr_accepted", "4")
    lab.sh("client", "ip", "mptcp", "endpoint", "add", "fd00:10:0:1::11", "dev", "eth0", "signal")
    lab.sh("client", "ip", "mptcp", "endpoint", "add", "fd00:10:0:1::12", "dev", "eth0", "subflow")
    lab.start_bump("bump", "left", "right", [
        {"name": "nptv6", "params": {"inside_prefix": INSIDE, "outside_prefix": OUTSIDE}}])


def _measure(scratch: Path, route_inside: bool) -> dict[str, Any]:
    with TranslatorLab(["client", "router", "bump", "server"], scratch) as lab:
        build(lab)
        if route_inside:  # a network that also routes the inside prefix (a ULA leaking)
            lab.sh("server", "ip", "route", "add", INSIDE, "via", "fd00:50::1", "dev", "eth0")
        result = lab.run_connection("6", SERVER, PORT, BYTES, hold_s=2.0,
                                    bind="fd00:10:0:1::1")
        result["counters"] = {role: lab.mptcp_counters(role) for role in ("client", "server")}
        result["resets_sent"] = {role: lab.tcp_counter(role, "OutRsts") for role in ("client", "server")}
        result["bumps"] = lab.stop_bumps()
        return result


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _measure(tmp_path_factory.mktemp("nptv6"), route_inside=False)


@pytest.fixture(scope="module")
def measured_routed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _measure(tmp_path_factory.mktemp("nptv6-routed"), route_inside=True)


def _outside(address: str) -> str:
    box = build_middlebox("nptv6", {"inside_prefix": INSIDE, "outside_prefix": OUTSIDE},
                          random.Random(1))
    mapped = box.outside_address(address)
    assert mapped is not None
    return mapped


def test_mp_capable_and_a_client_join_cross_the_translation(measured: dict[str, Any]) -> None:
    assert measured["received"] == str(2 * BYTES), measured
    server = measured["counters"]["server"]
    assert server["MPCapableSYNRX"] == 1 and server["MPCapableACKRX"] == 1
    assert server["MPCapableFallbackACK"] == 0 and server["DSSNotMatching"] == 0
    assert server["MPJoinSynRx"] == 1 and server["MPJoinAckRx"] == 1
    peers = {peer.rsplit(":", 1)[0].strip("[]") for _local, peer in measured["subflows"]}
    # the server sees the outside addresses of ::1 and ::12, ports unchanged
    assert peers == {_outside("fd00:10:0:1::1"), _outside("fd00:10:0:1::12")}, measured["subflows"]
    assert all(ipaddress.IPv6Address(p) in ipaddress.IPv6Network(OUTSIDE) for p in peers)
    pipeline = measured["bumps"]["bump"]["pipeline"]
    assert pipeline["handler_errors"] == 0 and pipeline["reencoded"] > 0


def test_the_inside_address_in_add_addr_cannot_be_joined(measured: dict[str, Any]) -> None:
    client = measured["counters"]["client"]
    server = measured["counters"]["server"]
    assert client["AddAddrTx"] == 1 and server["AddAddr"] == 1  # its HMAC verified: untouched
    # the server tries fd00:10:0:1::11, which its network does not route: connect fails
    assert server["MPJoinSynTxConnectErr"] == 1
    assert server["MPJoinSynTx"] == 0
    assert len(measured["subflows"]) == 2
    assert measured["resets_sent"]["client"] == 0


def test_a_routed_inside_address_is_reached_but_answered_from_the_outside(
        measured_routed: dict[str, Any]) -> None:
    """Where the inside prefix is routed too, the server's join SYN reaches the client
    untranslated (its destination is not in the outside prefix). The Linux client has no
    listener on that address and port and answers with a RST, which the box translates on the
    way out: the server's join socket waits for fd00:10:0:1::11 and ignores a RST from the
    outside address, so the SYN is retransmitted and the join never completes."""
    client = measured_routed["counters"]["client"]
    server = measured_routed["counters"]["server"]
    assert measured_routed["received"] == str(2 * BYTES)
    assert server["AddAddr"] == 1 and server["MPJoinSynTx"] == 1  # the SYN left this time
    assert server["MPJoinSynTxConnectErr"] == 0
    assert client["MPJoinSynRx"] == 0  # refused by TCP before MPTCP saw it
    assert measured_routed["resets_sent"]["client"] >= 1
    assert len(measured_routed["subflows"]) == 2  # the two client-opened subflows only
