"""Each balancer on the real lb topology: kernel MPTCP client and backends, a few connections.

The 20-connection figures are commands (`testbed lb experiments/lb/<spec>.toml`, see
docs/load-balancer.md); these runs are short, and each count they check is one the kernel or
the balancer reports, never a value the test supplies.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from testbed.balancer.experiment import load_spec, run_lb

pytestmark = pytest.mark.usefixtures("needs_root_and_tools")
SPECS = Path(__file__).resolve().parents[3] / "experiments" / "lb"
CONNECTIONS = 3
SETTLE_S = 2.0  # a join has this long to establish; the client stops waiting as soon as it has


def run(spec_name: str, tmp_path: Path) -> dict[str, Any]:
    spec, topo = load_spec(SPECS / f"{spec_name}.toml")
    result = run_lb(replace(spec, connections=CONNECTIONS, settle_s=SETTLE_S), topo, tmp_path)
    assert (tmp_path / "result.json").exists()
    counts = result["counts"]
    assert counts["connections"] == CONNECTIONS
    assert counts["intact"] == CONNECTIONS, result["connections"]  # every payload checked end to end
    assert counts["fell_back"] == 0
    return result


def test_no_remedy_behind_the_stateful_round_robin_table_every_join_is_refused(tmp_path: Path) -> None:
    """Round robin sends each connection's join to the next backend: never the one that knows
    the token, so every join is refused there and every connection keeps one subflow."""
    counts = run("none_table", tmp_path)["counts"]
    assert counts["subflows_per_connection"] == {"1": CONNECTIONS}
    assert counts["joins_refused"] == CONNECTIONS
    assert counts["joins_established"] == 0
    served = {name: row["connections"] for name, row in counts["per_backend"].items()}
    assert sum(served.values()) == CONNECTIONS


def test_no_remedy_behind_the_hash_joins_succeed_only_where_the_hash_happens_to_agree(tmp_path: Path) -> None:
    counts = run("none_hash", tmp_path)["counts"]
    # one join per connection, all to the VIP (a retransmitted join SYN counts again)
    assert counts["joins_received_by_backends"] >= CONNECTIONS
    assert counts["connections_with_a_join"] == counts["joins_established"]
    assert counts["joins_refused"] >= CONNECTIONS - counts["joins_established"]
    for row in counts["per_backend"].values():
        assert row["MPJoinNoTokenFound"] + row["MPJoinAckRx"] <= row["MPJoinSynRx"]


def test_remedy_a_c_flag_and_add_addr_gives_every_connection_its_join(tmp_path: Path) -> None:
    result = run("cflag_hash", tmp_path)
    counts = result["counts"]
    assert counts["subflows_per_connection"] == {"2": CONNECTIONS}
    assert counts["joins_refused"] == 0
    assert counts["joins_established"] == CONNECTIONS
    assert counts["add_addr_received_by_client"] == CONNECTIONS
    # the C flag kept the client off the VIP: its only joins went to announced addresses
    assert result["counters"]["client"].get("MPTcpExtMPJoinSynTx") == CONNECTIONS
    # Linux 6.18's path manager joins an announced address from the first subflow's address
    # when the client's endpoint is a plain `subflow` one: two subflows, one path
    assert counts["connections_on_both_client_paths"] == 0
    assert all(set(r["subflow_sources"]) == {"10.0.1.1"} for r in result["connections"])


def test_remedy_a_with_a_client_accepting_no_add_addr_uses_its_subflow_endpoint(tmp_path: Path) -> None:
    """Linux's C-flag case: no ADD_ADDR accepted, no endpoint used yet -> the `subflow`
    endpoint joins the announced address, from the second address."""
    result = run("cflag_hash_accept0", tmp_path)
    counts = result["counts"]
    assert counts["subflows_per_connection"] == {"2": CONNECTIONS}
    assert counts["connections_on_both_client_paths"] == CONNECTIONS
    assert all(set(r["subflow_sources"]) == {"10.0.1.1", "10.0.2.1"} for r in result["connections"])


def test_remedy_a_with_a_fullmesh_client_endpoint_uses_both_paths(tmp_path: Path) -> None:
    result = run("cflag_hash_fullmesh", tmp_path)
    counts = result["counts"]
    assert counts["subflows_per_connection"] == {"2": CONNECTIONS}
    assert counts["connections_on_both_client_paths"] == CONNECTIONS
    assert counts["joins_refused"] == 0


def test_remedy_a_behind_a_dnat_table_announces_nothing(tmp_path: Path) -> None:
    """Behind DNAT a backend's unicast address is its initial subflow's own address: Linux's
    path manager does not announce that endpoint, and the C flag forbids joining the VIP."""
    result = run("cflag_table", tmp_path)
    assert result["counts"]["subflows_per_connection"] == {"1": CONNECTIONS}
    assert result["counts"]["joins_received_by_backends"] == 0
    assert all(result["counters"][b].get("MPTcpExtAddAddrTx", 0) == 0 for b in ("be1", "be2", "be3"))


def test_remedy_b_the_token_aware_balancer_routes_every_join_home(tmp_path: Path) -> None:
    result = run("token", tmp_path)
    counts, balancer = result["counts"], result["balancer"]
    assert counts["subflows_per_connection"] == {"2": CONNECTIONS}
    assert counts["joins_refused"] == 0
    assert counts["joins_established"] == CONNECTIONS
    assert balancer["joins_by_token"] >= CONNECTIONS  # (a retransmitted join SYN counts again)
    assert balancer["joins_unknown_token"] == 0
    assert counts["connections_on_both_client_paths"] == CONNECTIONS
    assert balancer["tokens_learnt"] == CONNECTIONS
    assert balancer["bad_packets"] == 0
    assert balancer["exit_status"] == 0


def malformed_syns_to_the_vip() -> list[bytes]:
    """SYNs to VIP:5201 that the codec refuses: a truncated MP_JOIN, an option running past
    the header, a data offset past the segment."""
    from testbed.wire.ipv4 import encode_packet
    from testbed.wire.types import SYN, MpCapable, Packet, TcpSegment
    from topologies.lb import VIP

    good = bytearray(encode_packet(Packet("10.0.1.1", VIP, TcpSegment(40999, 5201, 1, 0, SYN, 64000,
                                                                      [MpCapable()]))))
    truncated_join = bytearray(good)
    truncated_join[20 + 20:20 + 24] = bytes([30, 3, 0x10, 0])  # MP_JOIN (subtype 1) of length 3
    past_header = bytearray(good)
    past_header[20 + 20:20 + 22] = bytes([30, 40])  # claims 40 bytes, the header has 4
    long_header = bytearray(good)
    long_header[20 + 12] = 0xF0  # a TCP header of 60 bytes in a 24-byte segment
    return [bytes(truncated_join), bytes(past_header), bytes(long_header)]


def test_the_token_aware_balancer_survives_malformed_syns(tmp_path: Path) -> None:
    import subprocess
    import sys

    packets = malformed_syns_to_the_vip()
    sender = ("import socket, sys\n"
              "s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)\n"
              f"for p in {packets!r}:\n"
              "    s.sendto(p, ('10.0.200.1', 0))\n")

    def send_junk(net: Any) -> None:
        done = net.popen("client", [sys.executable, "-c", sender], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
        _out, err = done.communicate(timeout=20)
        assert done.returncode == 0, err

    spec, topo = load_spec(SPECS / "token.toml")
    result = run_lb(replace(spec, connections=2, settle_s=SETTLE_S), topo, tmp_path, before_client=send_junk)
    balancer = result["balancer"]
    assert balancer["bad_packets"] == len(packets)
    assert balancer["exit_status"] == 0
    assert result["counts"]["subflows_per_connection"] == {"2": 2}
    assert result["counts"]["intact"] == 2
