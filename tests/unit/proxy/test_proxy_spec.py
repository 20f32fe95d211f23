"""The proxy topology, the on-path check and the spec checks (no namespaces)."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.errors import SpecError
from testbed.proxy.experiment import run_class, stall_after, summarize
from testbed.proxy.intercept import check_proxy_node
from testbed.proxy.spec import load_spec, parse_spec
from topologies import build_topology

SPECS = Path(__file__).resolve().parents[3] / "experiments" / "proxy"


def spec_data(**proxy: object) -> dict:
    return {"name": "t", "topology": {"name": "proxy"},
            "proxy": {"node": "proxy", "server": "server", "variant": "kernel", **proxy}}


def test_topology_proxy_puts_the_proxy_node_on_both_paths_to_the_server() -> None:
    topo = build_topology("proxy")
    described = topo.describe()
    assert described["proxy"] == "proxy"
    assert {link["name"] for link in described["links"]} == {"a", "b", "core_a", "core_b", "server"}
    assert check_proxy_node(topo, "proxy", "server", "here") == ("proxy", "server")


@pytest.mark.parametrize("node", ["ra", "rb"])
def test_a_router_on_one_path_only_is_not_on_the_path(node: str) -> None:
    with pytest.raises(SpecError, match=f"node '{node}' is not on every path from client to server"):
        check_proxy_node(build_topology("proxy"), node, "server", "here")


def test_the_check_follows_links_not_names() -> None:
    """On two_path the core router rs is the one every path crosses; ra is not."""
    topo = build_topology("two_path")
    assert check_proxy_node(topo, "rs", "server", "here") == ("rs", "server")
    with pytest.raises(SpecError, match="not on every path"):
        check_proxy_node(topo, "ra", "server", "here")


@pytest.mark.parametrize(("proxy", "message"), [
    ({"node": "client"}, "is a host, not a router"),
    ({"node": "mb_a"}, "is a middlebox, not a router"),
    ({"node": "nowhere"}, "node 'nowhere' is not in topology proxy"),
    ({"variant": "squid"}, "[proxy] variant = 'squid' is unknown (known: kernel"),
    ({"server": "ra"}, "server 'ra' is not a server host"),
    ({"server": "client"}, "server 'client' is not a server host"),
    ({"relay": 1}, "[proxy] unknown key 'relay'"),
    ({"variant": "none", "short_circuit_port": 5202}, "short_circuit_port needs a proxy"),
    ({"short_circuit_port": 5201}, "short_circuit_port is the server's port"),
    ({"short_circuit_port": 0}, "short_circuit_port = 0 must be an integer"),
])
def test_bad_proxy_tables_are_spec_errors(proxy: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_spec(spec_data(**proxy), "x.toml")


def test_a_proxy_spec_with_no_server_says_to_give_one() -> None:
    data = spec_data()
    del data["proxy"]["server"]
    with pytest.raises(SpecError, match='no server: give server = "server"'):
        parse_spec(data, "x.toml")


@pytest.mark.parametrize(("traffic", "message"), [
    ({"cut_path": "core_a"}, "cut_path = 'core_a' is not one of the client's paths"),
    ({"cut_path": "a", "mode": "echo"}, "cut_path needs mode"),
    ({"cut_at_s": 0}, "cut_at_s = 0 must be seconds"),
    ({"repeats": 0}, "repeats = 0 must be an integer >= 1"),
    ({"mode": "upload"}, "mode = 'upload' is unknown"),
    ({"port": 70000}, "port = 70000 must be an integer"),
])
def test_bad_traffic_is_a_spec_error(traffic: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        parse_spec({**spec_data(), "traffic": traffic}, "x.toml")


def test_a_proxy_on_a_topology_without_a_single_choke_point_is_refused() -> None:
    data = {**spec_data(node="ra"), "topology": {"name": "two_path"}}
    with pytest.raises(SpecError, match="not on every path"):
        parse_spec(data, "x.toml")


def test_the_shipped_specs_load() -> None:
    names = set()
    for path in sorted(SPECS.glob("*.toml")):
        spec, _topo = load_spec(path)
        names.add(spec.name)
        assert spec.name == path.stem
    assert {"goodput_kernel", "goodput_direct", "cut_kernel", "latency_kernel", "latency_direct"} <= names


def test_the_stall_after_a_cut_is_the_longest_pause_that_ended_after_it() -> None:
    record = {"gaps": [[10.0, 0.5], [20.0, 0.3], [19.0, 0.05]]}
    assert stall_after(record, 19.5) == 0.3
    assert stall_after(record, 10.6) == 0.3
    assert stall_after(record, 10.2) == 0.5
    assert stall_after(record, 30.0) is None


def test_medians_count_only_intact_runs() -> None:
    records = [{"intact": True, "goodput_mbit": 10.0, "subflows": 2, "mptcp": True,
                "subflow_sources": ["10.0.1.1", "10.0.2.1"]},
               {"intact": True, "goodput_mbit": 30.0, "subflows": 2, "mptcp": True},
               {"intact": False, "goodput_mbit": 1000.0, "error": "OSError: reset", "subflows": 1}]
    summary = summarize(records)
    assert summary["median_goodput_mbit"] == 20.0
    assert summary["intact"] == 2 and summary["mptcp"] == 2 and summary["both_paths"] == 1
    assert summary["errors"] == ["OSError: reset"]
    assert summary["outcome_classes"] == {"mptcp/2": 2, "reset": 1}


def test_a_plain_tcp_run_is_fallback_syn_and_a_damaged_one_reset() -> None:
    assert run_class({"intact": True, "mptcp": False, "subflows": 1}) == "fallback-syn"
    assert run_class({"intact": False, "mptcp": True, "subflows": 2}) == "reset"
    assert run_class({"intact": True, "mptcp": True, "subflows": 1}) == "mptcp/1"


def test_an_unknown_client_stack_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match=r"\[client\] stack = 'quic' is unknown"):
        parse_spec({**spec_data(), "client": {"stack": "quic"}}, "x.toml")


def test_the_python_client_record_is_intact_only_when_both_ends_agree() -> None:
    from testbed.endpoints.report import parse_report
    from testbed.proxy.stack_client import record_of

    spec, _topo = parse_spec({**spec_data(), "client": {"stack": "python"}, "traffic": {"bytes": 10}},
                             "x.toml")
    base = {"event": "report", "connection": 0, "transport": "mptcp", "mptcp_requested": True,
            "mptcp_used": True, "direction": "upload", "sending": True, "mode": "bytes",
            "requested_bytes": 10, "requested_seconds": None, "seed": 1, "bytes": 10, "sha256": "ab",
            "duration_s": 1.0, "goodput_mbps": 0.1, "local": None, "remote": None,
            "started_at_unix": None, "subflows": [], "mptcp_info": None, "samples": 0,
            "mptcp_seen": True, "error": None, "error_kind": None, "exit_code": 0, "schema": 1}
    import json

    client = parse_report(json.dumps({**base, "role": "client"}))
    server = parse_report(json.dumps({**base, "role": "server"}))
    assert record_of(spec, client, server)["intact"] is True
    altered = parse_report(json.dumps({**base, "role": "server", "sha256": "cd"}))
    assert record_of(spec, client, altered)["intact"] is False
    short = parse_report(json.dumps({**base, "role": "server", "bytes": 9}))
    assert record_of(spec, client, short)["intact"] is False
