"""Topologies as data and spec validation: no root needed, nothing is built."""

from __future__ import annotations

import pytest

from testbed.errors import SpecError
from testbed.net.params import LinkParams
from testbed.spec import parse_spec
from topologies import TOPOLOGIES, build_topology


def base_spec(**overrides: object) -> dict:
    spec: dict = {
        "topology": {"name": "two_path"},
        "endpoints": [{"role": "server", "stack": "kernel"}, {"role": "client", "stack": "kernel"}],
        "traffic": {"bytes": 1000},
    }
    spec.update(overrides)
    return spec


@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
def test_every_topology_builds_with_unique_addresses_and_interface_names(name: str) -> None:
    topo = build_topology(name)
    addresses = [a for n in topo.nodes for a in topo.host_addresses(n)]
    assert len(addresses) == len(set(addresses))
    names = [i.name for link in topo.links.values() for s in link.segments for i in (s.left, s.right)]
    assert len(names) == len(set(names))
    assert all(len(n) <= 15 for n in names)


def test_two_path_client_has_policy_routing_per_address() -> None:
    topo = build_topology("two_path")
    rules = {r.source: r.table for r in topo.rules["client"]}
    assert set(rules) == {"10.0.1.1", "10.0.2.1"}
    for source, table in rules.items():
        defaults = [r for r in topo.routes["client"] if r.table == table and r.destination == "default"]
        assert len(defaults) == 1
        # each source leaves through the router of its own path
        assert defaults[0].via == ("10.0.1.2" if source == "10.0.1.1" else "10.0.2.2")


def test_two_path_core_router_returns_each_path_the_way_it_came() -> None:
    topo = build_topology("two_path")
    routes = {r.destination: r.via for r in topo.routes["rs"]}
    assert routes["10.0.1.0/24"] == "10.0.11.1"  # via ra
    assert routes["10.0.2.0/24"] == "10.0.12.1"  # via rb


def test_nat_private_subnet_is_not_routed_beyond_the_nat() -> None:
    topo = build_topology("nat_home")
    for router in ("isp", "cell", "rs"):
        assert all(r.destination != "192.168.1.0/24" for r in topo.routes[router])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"delay_ms": -1}, "delay_ms"),
        ({"loss_pct": 101}, "loss_pct"),
        ({"rate_mbit": 0}, "rate_mbit"),
        ({"jitter_ms": 5, "delay_ms": 1}, "jitter_ms"),
        ({"queue_pkts": 0}, "queue_pkts"),
        ({"rate": 10}, "unknown link parameter 'rate'"),
    ],
)
def test_impossible_link_parameters_are_named(params: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        LinkParams.from_dict(params)


def test_unknown_topology_and_parameter_are_errors() -> None:
    with pytest.raises(SpecError, match="unknown topology 'three_path'"):
        build_topology("three_path")
    with pytest.raises(SpecError, match="unknown parameter 'rate'"):
        build_topology("two_path", {"rate": 5})


def test_spec_unknown_key_and_missing_amount() -> None:
    with pytest.raises(SpecError, match="unknown key 'trafic'"):
        parse_spec(base_spec(trafic={}))
    with pytest.raises(SpecError, match="exactly one of bytes or seconds"):
        parse_spec(base_spec(traffic={}))
    with pytest.raises(SpecError, match="unknown stack 'bsd'"):
        parse_spec(base_spec(endpoints=[{"role": "server", "stack": "bsd"},
                                        {"role": "client", "stack": "kernel"}]))


def test_spec_timeline_is_validated_and_sorted() -> None:
    spec = parse_spec(base_spec(timeline=[
        {"at_s": 3.0, "link": "a", "set": {"loss_pct": 1.0}},
        {"at_s": 1, "link": "b", "up": False},
    ]))
    assert [e.at_s for e in spec.timeline] == [1.0, 3.0]
    with pytest.raises(SpecError, match="loss_pct"):
        parse_spec(base_spec(timeline=[{"at_s": 1.0, "link": "a", "set": {"loss_pct": 200}}]))


def test_queue_defaults_to_a_bandwidth_delay_product() -> None:
    assert LinkParams(rate_mbit=100, delay_ms=10).effective_queue_pkts() == 167
    assert LinkParams(rate_mbit=1).effective_queue_pkts() == 100
    assert LinkParams(rate_mbit=100, queue_pkts=50).effective_queue_pkts() == 50


def test_python_stack_config_is_validated_before_any_run() -> None:
    endpoints = [{"role": "server", "stack": "kernel"},
                 {"role": "client", "stack": "python", "stack_config": {"congestion_control": "olia"}}]
    spec = parse_spec(base_spec(endpoints=endpoints))
    assert spec.client.stack_config == {"congestion_control": "olia"}
    endpoints[1]["stack_config"] = {"congestion_contrl": "olia"}
    with pytest.raises(SpecError, match="congestion_contrl"):
        parse_spec(base_spec(endpoints=endpoints))
    with pytest.raises(SpecError, match="only python endpoints"):
        parse_spec(base_spec(endpoints=[{"role": "server", "stack": "kernel", "stack_config": {"mss": 1000}},
                                        {"role": "client", "stack": "kernel"}]))


def test_kernel_buffer_limit_is_read_and_bounded() -> None:
    spec = parse_spec(base_spec(traffic={"seconds": 5, "kernel_buffer_max_bytes": 33554432}))
    assert spec.traffic.kernel_buffer_max_bytes == 33554432
    assert parse_spec(base_spec(traffic={"seconds": 5})).traffic.kernel_buffer_max_bytes is None
    with pytest.raises(SpecError, match="kernel_buffer_max_bytes must be 65536"):
        parse_spec(base_spec(traffic={"seconds": 5, "kernel_buffer_max_bytes": 1000}))


def test_an_expected_outcome_may_be_any_of_a_list() -> None:
    from testbed.runner import check_expectations

    spec = parse_spec(base_spec(expect={"outcome": ["mptcp", "subflow-rejected"]}))
    connection = {"outcome": "subflow-rejected", "integrity": "ok", "goodput_mbps": 1.0, "subflows": []}
    assert check_expectations(spec.expect, connection)["passed"]
    connection["outcome"] = "fallback-tcp"
    assert check_expectations(spec.expect, connection)["failures"] == [
        "outcome fallback-tcp != expected mptcp or subflow-rejected"]
    with pytest.raises(SpecError, match=r"'corrupted' is not one of .* integrity class"):
        parse_spec(base_spec(expect={"outcome": ["mptcp", "corrupted"]}))
    with pytest.raises(SpecError, match="empty list"):
        parse_spec(base_spec(expect={"outcome": []}))
    with pytest.raises(SpecError, match=r"\[expect\].outcome: expected"):
        parse_spec(base_spec(expect={"outcome": 3}))


def test_a_truncated_stream_passes_only_when_every_expected_outcome_is_incomplete() -> None:
    from testbed.runner import check_expectations

    truncated = {"outcome": "reset", "integrity": "truncated", "goodput_mbps": 1.0, "subflows": []}
    assert check_expectations({"outcome": ["reset", "stalled"]}, truncated)["passed"]
    assert not check_expectations({"outcome": ["reset", "mptcp"]}, truncated)["passed"]
