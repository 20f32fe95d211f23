"""The lb topology as data, and the balancer spec's checks (all before anything is built)."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.balancer.experiment import load_spec, parse_spec, summarize
from testbed.errors import SpecError
from topologies import build_topology
from topologies.lb import VIP


def spec_data(**balancer: object) -> dict:
    return {"name": "t", "topology": {"name": "lb", "params": {"backends": 3}},
            "balancer": {"node": "lb", "variant": "hash", "remedy": "none", **balancer},
            "traffic": {"connections": 2}}


def test_lb_draws_a_vip_routed_to_the_balancer_and_one_link_per_backend() -> None:
    topo = build_topology("lb", {"backends": 4})
    assert topo.backends == ["be1", "be2", "be3", "be4"]
    for router in ("ra", "rb"):
        vip_routes = [r for r in topo.routes[router] if r.destination == f"{VIP}/32"]
        assert len(vip_routes) == 1
        assert vip_routes[0].via == topo.links[f"core_{router[1]}"].address_of("lb")
    for index, backend in enumerate(topo.backends, start=1):
        assert topo.host_addresses(backend) == [f"10.0.{100 + index}.2"]
        link, _iface, peer = topo.l3_interfaces(backend)[0]
        assert peer == f"10.0.{100 + index}.1" and "lb" in (link.a, link.b)
    assert topo.host_addresses("client") == ["10.0.1.1", "10.0.2.1"]


@pytest.mark.parametrize("backends", [0, -1, 9, "3", True])
def test_a_balancer_without_a_sensible_number_of_backends_is_refused(backends: object) -> None:
    with pytest.raises(SpecError, match="backends"):
        build_topology("lb", {"backends": backends})


def test_the_balancer_experiments_are_ipv4_only_and_say_so() -> None:
    data = spec_data()
    data["topology"]["params"]["family"] = "dual"
    with pytest.raises(SpecError, match="IPv4 only"):
        parse_spec(data, "t.toml")


def test_a_dual_stack_lb_routes_both_vips_to_the_balancer() -> None:
    topo = build_topology("lb", {"family": "dual"})
    destinations = {r.destination for r in topo.routes["rb"]}
    assert {f"{VIP}/32", "fd00:10:0:200::1/128"} <= destinations
    assert topo.describe()["vip6"] == "fd00:10:0:200::1"


def test_a_valid_spec_parses_with_its_defaults() -> None:
    spec, topo = parse_spec(spec_data(), "t.toml")
    assert (spec.variant, spec.remedy, spec.node) == ("hash", "none", "lb")
    assert (spec.connections, spec.port, spec.client_endpoint) == (2, 5201, "subflow")
    assert topo.name == "lb"


def test_an_unknown_variant_names_the_known_ones() -> None:
    with pytest.raises(SpecError, match=r"unknown balancer variant 'maglev' \(known: hash, table, token\)"):
        parse_spec(spec_data(variant="maglev"), "t.toml")


@pytest.mark.parametrize("node, message", [
    ("ra", "not on the path to backend be1"),
    ("client", "is a host, not a router"),
    ("be2", "is a host, not a router"),
    ("mb_a", "is a middlebox, not a router"),
    ("nowhere", "is not in topology lb"),
])
def test_a_balancer_off_the_path_is_refused(node: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec(spec_data(node=node), "t.toml")


@pytest.mark.parametrize("data, message", [
    ({**spec_data(), "traffik": {}}, "unknown key 'traffik'"),
    ({**spec_data(), "traffic": {"connections": 0}}, "connections = 0"),
    ({**spec_data(), "traffic": {"conections": 3}}, "unknown key 'conections'"),
    ({**spec_data(), "topology": {"name": "two_path"}}, "runs on topology \"lb\""),
    (spec_data(remedy="maybe"), "remedy = 'maybe'"),
    ({**spec_data(), "client": {"endpoint": "backup"}}, "endpoint = 'backup'"),
    ({**spec_data(), "client": {"endpoints": "subflow"}}, "unknown key 'endpoints'"),
    ({**spec_data(), "topology": {"name": "lb", "params": {"backends": 0}}}, "backends=0"),
])
def test_spec_mistakes_are_one_line_errors(data: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec(data, "t.toml")


def test_summarize_counts_subflows_refusals_and_backends() -> None:
    records = [{"backend": "be1", "subflows": 1, "intact": True, "mptcp": True, "duration_s": 0.3},
               {"backend": "be2", "subflows": 2, "intact": True, "mptcp": True, "duration_s": 0.5},
               {"backend": "be1", "subflows": 1, "intact": False, "mptcp": True, "error": "x",
                "duration_s": 0.1}]
    per_backend = {"be1": {"MPTcpExtMPJoinNoTokenFound": 1, "MPTcpExtMPJoinSynRx": 1},
                   "be2": {"MPTcpExtMPJoinSynRx": 2, "MPTcpExtMPJoinAckRx": 1,
                           "MPTcpExtMPJoinNoTokenFound": 1},
                   "be3": {}}
    counts = summarize(records, per_backend, {"MPTcpExtAddAddr": 0})
    assert counts["subflows_per_connection"] == {"1": 2, "2": 1}
    assert (counts["connections"], counts["intact"], counts["errors"]) == (3, 2, 1)
    joins = (counts["joins_received_by_backends"], counts["joins_established"], counts["joins_refused"])
    assert joins == (3, 1, 2)
    assert counts["per_backend"]["be1"] == {"connections": 2, "MPJoinNoTokenFound": 1, "MPJoinSynRx": 1,
                                            "MPJoinAckRx": 0}
    assert counts["per_backend"]["be3"]["connections"] == 0
    assert counts["median_duration_s"] == 0.3


def test_connection_classes_use_the_matrix_vocabulary() -> None:
    from testbed.balancer.experiment import connection_class

    ok = {"intact": True, "mptcp": True}
    assert connection_class({**ok, "subflows": 2}, joins_tried=True) == "mptcp/2"
    assert connection_class({**ok, "subflows": 1}, joins_tried=True) == "subflow-rejected"
    assert connection_class({**ok, "subflows": 1}, joins_tried=False) == "mptcp/1"
    plain = {"intact": True, "mptcp": False, "subflows": 1}
    assert connection_class(plain, joins_tried=True) == "fallback-syn"
    failed = {"intact": False, "error": "OSError: reset", "subflows": 2}
    assert connection_class(failed, joins_tried=True) == "reset"


def test_the_table_has_a_row_per_run_with_its_classes() -> None:
    from testbed.balancer.experiment import format_table

    counts = summarize([{"backend": "be1", "subflows": 1, "intact": True, "mptcp": True, "duration_s": 0.3,
                         "subflow_sources": ["10.0.1.1"]}],
                       {"be1": {"MPTcpExtMPJoinNoTokenFound": 1}}, {"MPTcpExtMPJoinSynTx": 1})
    table = format_table([{"spec": {"name": "lb_x", "variant": "table", "remedy": "none"}, "counts": counts}])
    assert table.splitlines()[1].split() == ["lb_x", "table", "none", "kernel-kernel", "subflow-rejected",
                                             "1", "1", "0/1"]
    python = {**counts, "joins_refused": None}  # python backends: their refusals are not counted
    spec = {"name": "lb_y", "variant": "hash", "remedy": "none", "client_stack": "python",
            "backend_stack": "python"}
    table = format_table([{"spec": spec, "counts": python}])
    assert table.splitlines()[1].split()[3:] == ["python-python", "subflow-rejected", "1", "-", "0/1"]


@pytest.mark.parametrize(("edit", "message"), [
    ({"client": {"stack": "quic"}}, "[client] stack = 'quic'"),
    ({"balancer": {"node": "lb", "backend_stack": "tcp"}}, "[balancer] backend_stack = 'tcp'"),
])
def test_an_unknown_stack_is_one_line(edit: dict, message: str) -> None:
    data = {"topology": {"name": "lb"}, "balancer": {"node": "lb"}, **edit}
    with pytest.raises(SpecError) as caught:
        parse_spec(data, "t.toml")
    assert message in caught.value.message and "(known: kernel, python)" in caught.value.message


SPECS = sorted((Path(__file__).resolve().parents[3] / "experiments" / "lb").glob("*.toml"))


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_shipped_balancer_spec_loads_with_20_connections(path: Path) -> None:
    spec, _topo = load_spec(path)
    assert spec.connections >= 20
    assert spec.name == f"lb_{path.stem}"
