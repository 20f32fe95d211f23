"""The converter proxy on the real proxy topology: kernel MPTCP client and proxy, a legacy
server with MPTCP disabled, every transfer hash-checked at the server.

The figures (50 MB, 3 runs) are commands (`testbed proxy experiments/proxy/*.toml`, see
docs/proxy.md); these runs are short, and what they check is what the endpoints, the relay and
the kernels' counters report.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from testbed.proxy.experiment import run_proxy
from testbed.proxy.spec import load_spec

SPECS = Path(__file__).resolve().parents[3] / "experiments" / "proxy"
BYTES = 4_000_000


@pytest.fixture(autouse=True)
def _needs_root_and_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    missing = [tool for tool in ("ip", "nft", "ethtool") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"missing tools: {missing}")


def run(spec_name: str, tmp_path: Path, **changes: Any) -> dict[str, Any]:
    spec, topo = load_spec(SPECS / f"{spec_name}.toml")
    result = run_proxy(replace(spec, repeats=1, **changes), topo, tmp_path)
    assert (tmp_path / "result.json").exists()
    assert result["summary"]["intact"] == 1, result["runs"]  # the server's count and SHA-256 match
    return result


def test_the_kernel_proxy_terminates_mptcp_over_both_paths_and_relays_to_the_legacy_server(
        tmp_path: Path) -> None:
    result = run("goodput_kernel", tmp_path, byte_count=BYTES)
    record = result["runs"][0]
    assert record["mptcp"] is True
    assert sorted(set(record["subflow_sources"])) == ["10.0.1.1", "10.0.2.1"]
    relay = result["relay"]
    assert relay["relayed"] == 1 and relay["errors"] == 0
    assert relay["bytes_to_server"] == BYTES + len("bulk 1\n")  # nothing lost or added on the way
    assert relay["bytes_to_client"] > 0  # the server's verdict came back after the half-close
    proxy = result["counters"]["proxy"]
    assert proxy.get("MPTcpExtMPCapableSYNRX") == 1 and proxy.get("MPTcpExtMPJoinAckRx") == 1
    assert result["server"] == {"served": 1, "errors": 0}


def test_without_a_proxy_the_server_is_reached_over_plain_tcp_on_one_path(tmp_path: Path) -> None:
    result = run("goodput_direct", tmp_path, byte_count=BYTES)
    assert result["runs"][0]["mptcp"] is False
    assert result["relay"] is None
    assert not result["counters"]["proxy"].get("MPTcpExtMPCapableSYNRX")


def test_a_cut_of_the_first_subflow_path_leaves_the_connection_alive_and_intact(tmp_path: Path) -> None:
    result = run("cut_kernel", tmp_path, byte_count=8_000_000, cut_at_s=0.5)
    record = result["runs"][0]
    assert record["cut"] is True and record["mptcp"] is True
    assert record["duration_s"] > 0.5  # the cut happened during the transfer
    assert result["relay"]["relayed"] == 1


def test_request_response_through_the_proxy(tmp_path: Path) -> None:
    result = run("latency_kernel", tmp_path, exchanges=50)
    record = result["runs"][0]
    assert record["mptcp"] is True and record["rtt_median_us"] > 0
    assert result["relay"]["bytes_to_server"] == 50 * 64 + len("echo 64 50\n")


def test_the_python_stack_proxy_terminates_mptcp_over_both_paths_and_relays_to_the_legacy_server(
        tmp_path: Path) -> None:
    result = run("goodput_python", tmp_path, byte_count=BYTES)
    record = result["runs"][0]
    assert record["mptcp"] is True
    assert sorted(set(record["subflow_sources"])) == ["10.0.1.1", "10.0.2.1"]
    relay = result["relay"]
    assert relay["relay"] == "python" and relay["relayed"] == 1 and relay["errors"] == 0
    assert relay["bytes_to_server"] == BYTES + len("bulk 1\n")
    assert relay["bytes_to_client"] > 0  # the verdict came back through the stack after the half-close
    assert relay["driver_dropped"] == {}  # every segment the stack read decoded and was handled
    proxy = result["counters"]["proxy"]
    assert not proxy.get("MPTcpExtMPCapableSYNRX")  # the stack answered, not the node's kernel
    assert result["server"] == {"served": 1, "errors": 0}


def test_a_cut_of_the_first_subflow_path_through_the_python_stack_proxy(tmp_path: Path) -> None:
    result = run("cut_python", tmp_path, byte_count=8_000_000, cut_at_s=0.5)
    record = result["runs"][0]
    assert record["cut"] is True and record["mptcp"] is True and record["duration_s"] > 0.5
    assert result["relay"]["relayed"] == 1


def test_request_response_through_the_python_stack_proxy_closes_cleanly(tmp_path: Path) -> None:
    """The server closes first here: the relay's DATA_FIN, then the client's, can end the MPTCP
    connection in one batch with the client's end of stream, which must still reach the server."""
    result = run("latency_python", tmp_path, exchanges=50)
    assert result["runs"][0]["mptcp"] is True
    relay = result["relay"]
    assert relay["relayed"] == 1 and relay["errors"] == 0
    assert relay["bytes_to_server"] == 50 * 64 + len("echo 64 50\n")


def joins_reached_the_server_and_were_refused(short: dict) -> None:
    """The short-circuit's common finding: the client joined the announced server, which knew
    no such token and refused every join; the proxy still carried all the client's bytes."""
    assert short["joins_received_by_server"] >= 1
    assert short["joins_refused_by_server"] == short["joins_received_by_server"]
    assert short["proxy_share_of_client_bytes"] == 1.0


def test_short_circuit_the_linux_client_joins_the_announced_server_which_refuses_the_join(
        tmp_path: Path) -> None:
    """The server speaks MPTCP but never saw the client's keys (the client's connection ends
    at the proxy): the join it gets straight from the client carries a token it does not know."""
    result = run("short_circuit_kernel", tmp_path, byte_count=BYTES)
    short = result["summary"]["short_circuit"]
    assert short["add_addr_received_by_client"] == 1
    joins_reached_the_server_and_were_refused(short)
    assert short["joins_established_at_server"] == 0
    assert result["runs"][0]["subflows"] == 2  # the two subflows to the proxy still carry it all


def test_short_circuit_the_linux_client_joins_the_python_proxys_announcement(tmp_path: Path) -> None:
    """The python-stack proxy announces the server's address (its own initial address, so the
    same address at another port) with an id of its own: Linux ignores an id-0 ADD_ADDR that
    is not the initial subflow's address and port, and sent no join before that fix."""
    result = run("short_circuit_python", tmp_path, byte_count=BYTES)
    short = result["summary"]["short_circuit"]
    assert short["add_addr_received_by_client"] == 1
    joins_reached_the_server_and_were_refused(short)


@pytest.mark.parametrize("proxy", ["kernel", "python"])
def test_a_python_stack_client_through_either_proxy(proxy: str, tmp_path: Path) -> None:
    """The stack's endpoint program as the client, the kernel endpoint as the legacy server:
    both ends' byte counts and SHA-256 agree, and both client addresses carried a subflow."""
    result = run(f"goodput_{proxy}_pyclient", tmp_path, byte_count=BYTES)
    record = result["runs"][0]
    assert record["client_stack"] == "python" and record["mptcp"] is True
    assert sorted(set(record["subflow_sources"])) == ["10.0.1.1", "10.0.2.1"]
    assert result["relay"]["relayed"] == 1


def test_short_circuit_the_python_client_joins_the_announced_server_too(tmp_path: Path) -> None:
    result = run("short_circuit_kernel_pyclient", tmp_path, byte_count=BYTES)
    short = result["summary"]["short_circuit"]
    assert short["add_addr_received_by_client"] >= 1  # the stack's own counters
    joins_reached_the_server_and_were_refused(short)
