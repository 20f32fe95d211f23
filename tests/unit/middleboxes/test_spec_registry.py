"""Registry and spec validation: every mistake in a spec is one clear MiddleboxSpecError."""

from __future__ import annotations

import random

import pytest

from middleboxes.registry import (
    MIDDLEBOXES,
    build_middlebox,
    describe_middleboxes,
    parse_middlebox_params,
)
from middleboxes.spec import MiddleboxSpecError
from testbed.wire.types import Dss
from tests.unit.middleboxes.packets import DOWN, UP, build, packet

# Smallest valid params for each middlebox.
MINIMAL_PARAMS: dict[str, dict] = {
    "nat": {"public_address": "198.51.100.1"},
    "strip_options": {},
    "rewrite_seq": {},
    "coalesce": {},
    "split": {},
    "rewrite_payload": {"pattern": "PORT", "replacement": "PORT"},
    "syn_firewall": {},
    "drop": {"match": ["add_addr"]},
    "delay": {"match": ["data_fin"], "delay_ms": 10},
    "nat64": {"pool_address": "10.0.1.100"},
    "nptv6": {"inside_prefix": "fd00:10:0:1::/64", "outside_prefix": "fd00:99:0:1::/64"},
}


def spec_error(name: str, params: dict) -> str:
    with pytest.raises(MiddleboxSpecError) as caught:
        build_middlebox(name, params, random.Random(1))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_catalogue_is_complete_and_each_builds_with_minimal_params() -> None:
    assert set(MINIMAL_PARAMS) == set(MIDDLEBOXES)
    for name, params in MINIMAL_PARAMS.items():
        box = build_middlebox(name, params, random.Random(1))
        assert box.name == name
        assert box.counters.as_dict() == {"seen": 0, "changed": 0, "dropped": 0, "injected": 0}
        assert box.next_deadline() is None


def test_unknown_middlebox_lists_known_names_and_suggests() -> None:
    message = spec_error("natt", {})
    assert "unknown middlebox 'natt'" in message
    assert "did you mean 'nat'" in message
    assert "coalesce, delay, drop, nat, nat64, nptv6, rewrite_payload" in message


def test_unknown_parameter_names_it_and_lists_valid_ones() -> None:
    message = spec_error("nat", {"public_address": "198.51.100.1", "idle_timeout": 30})
    assert message.startswith("middlebox 'nat': unknown parameter 'idle_timeout'")
    assert "did you mean 'idle_timeout_s'" in message
    assert "valid: filtering, idle_timeout_s" in message


def test_missing_required_parameter() -> None:
    message = spec_error("nat", {})
    assert "missing required parameter 'public_address'" in message


@pytest.mark.parametrize(("name", "params", "fragment"), [
    ("nat", {"public_address": "198.51.100.1", "idle_timeout_s": "30"},
     "parameter 'idle_timeout_s': expected a number, got str '30'"),
    ("nat", {"public_address": "198.51.100.1", "port_min": 2.5},
     "parameter 'port_min': expected an integer, got float 2.5"),
    ("nat", {"public_address": "198.51.100.1", "port_min": True},
     "parameter 'port_min': expected an integer, got bool True"),
    ("nat", {"public_address": "198.51.100.1", "mapping": "full_cone"},
     "parameter 'mapping': got 'full_cone', allowed: endpoint_independent, "
     "address_and_port_dependent"),
    ("nat", {"public_address": "not-an-ip"},
     "parameter 'public_address': got 'not-an-ip', expected an IPv4 address"),
    ("nat", {"public_address": "198.51.100.1", "port_min": 3000, "port_max": 2000},
     "parameter 'port_min': port_min 3000 > port_max 2000"),
    ("nat", {"public_address": "198.51.100.1", "port_max": 70000},
     "parameter 'port_max': got 70000, must be at most 65535"),
    ("nat", {"public_address": "198.51.100.1", "idle_timeout_s": float("inf")},
     "expected a finite number"),
    ("strip_options", {"what": "mptcp"},
     "parameter 'what': expected a list of str, got str 'mptcp'"),
    ("strip_options", {"what": ["mp_joins"]},
     "parameter 'what': got 'mp_joins', allowed: mptcp, unknown, mp_capable, mp_join"),
    ("strip_options", {"packets": ["synack", "ack"]},
     "parameter 'packets': got 'ack', allowed: syn, synack, first_data, data, pure_ack"),
    ("strip_options", {"how": "zero"}, "parameter 'how': got 'zero', allowed: remove, nop"),
    ("strip_options", {"direction": "up"},
     "parameter 'direction': got 'up', allowed: upstream, downstream, both"),
    ("split", {"mss_bytes": 0}, "parameter 'mss_bytes': got 0, must be at least 1"),
    ("coalesce", {"keep_options": "middle"}, "allowed: first, last"),
    ("coalesce", {"hold_ms": -1}, "must be at least 0.0"),
    ("coalesce", {"mtu_bytes": 41}, "'mtu_bytes': got 41: no room for two payload bytes"),
    ("rewrite_payload", {"pattern": "", "replacement": "x"}, "'pattern': must not be empty"),
    ("rewrite_payload", {"pattern": "x"}, "missing required parameter 'replacement'"),
    ("rewrite_payload", {"pattern": "x", "replacement": "y", "mtu_bytes": 80},
     "'mtu_bytes': got 80, must be 0 or at least 81"),
    ("syn_firewall", {"known_options": ["mss", "tcp_ao"]}, "got 'tcp_ao', allowed: mptcp"),
    ("syn_firewall", {"packets": ["ack"]}, "allowed: syn, synack"),
    ("rewrite_seq", {"offset": -5}, "must be at least 0"),
    ("rewrite_seq", {"offset": 1 << 32}, "must be at most 4294967295"),
    ("drop", {}, "missing required parameter 'match'"),
    ("drop", {"match": ["add_adr"]}, "got 'add_adr', allowed: any, syn"),
    ("drop", {"match": ["every_nth_data"]}, "every_nth_data needs every_nth >= 1"),
    ("drop", {"match": ["add_addr"], "every_nth": 3}, "only meaningful with match"),
    ("drop", {"match": ["subflow"]}, "subflow needs exactly one of subflow_index"),
    ("drop", {"match": ["subflow"], "subflow_index": 1, "subflow_port": 5201},
     "subflow needs exactly one"),
    ("drop", {"match": ["any"], "subflow_port": 5201}, "'subflow_port': only meaningful"),
    ("drop", {"match": ["subflow"], "subflow_tuple": "10.0.0.1-10.0.1.1"},
     "expected 'ADDR:PORT-ADDR:PORT'"),
    ("drop", {"match": ["any"], "probability": 1.5}, "must be at most 1.0"),
    ("delay", {"match": ["any"]}, "missing required parameter 'delay_ms'"),
    ("delay", {"match": ["any"], "delay_ms": 0}, "delay_ms and jitter_ms are both 0"),
    ("drop", {"match": ["any"], "log_limit": 0}, "'log_limit': got 0, must be at least 1"),
])
def test_bad_values_name_middlebox_parameter_and_allowed(name: str, params: dict,
                                                         fragment: str) -> None:
    message = spec_error(name, params)
    assert message.startswith(f"middlebox '{name}': ")
    assert fragment in message


def test_params_must_be_a_table() -> None:
    message = spec_error("split", ["mss_bytes", 500])  # type: ignore[arg-type]
    assert "params must be a table" in message


def test_parse_without_building_returns_frozen_typed_params() -> None:
    params = parse_middlebox_params("split", {"mss_bytes": 700, "options_on_pieces": "first"})
    assert params.mss_bytes == 700  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        params.mss_bytes = 1  # type: ignore[misc]
    coalesce = parse_middlebox_params("coalesce", {"hold_ms": 2})
    assert coalesce.hold_ms == 2.0 and isinstance(coalesce.hold_ms, float)  # type: ignore


def test_build_needs_a_random_instance() -> None:
    with pytest.raises(TypeError, match=r"random\.Random"):
        build_middlebox("split", {}, 1)  # type: ignore[arg-type]


def test_describe_lists_every_middlebox_with_typed_parameters() -> None:
    described = {entry["name"]: entry for entry in describe_middleboxes()}
    assert set(described) == set(MIDDLEBOXES)
    for entry in described.values():
        assert entry["imitates"]
        assert entry["name"] in entry["summary"]
        names = [p["name"] for p in entry["parameters"]]
        assert names[-2:] == ["log_changes", "log_limit"]
        assert all(p["doc"] for p in entry["parameters"])
    nat = {p["name"]: p for p in described["nat"]["parameters"]}
    assert nat["public_address"]["required"] is True
    assert nat["mapping"]["type"] == "one of endpoint_independent|address_and_port_dependent"
    assert nat["port_max"] == {"name": "port_max", "type": "int", "required": False,
                               "default": 65535, "doc": "highest public port allocated",
                               "minimum": 1, "maximum": 65535}
    strip = {p["name"]: p for p in described["strip_options"]["parameters"]}
    assert strip["packets"]["default"] == ["syn", "synack", "first_data", "data", "pure_ack",
                                           "fin", "rst"]
    assert described["rewrite_seq"]["parameters"][2]["type"] == "int (optional)"


def test_change_log_is_off_by_default_and_bounded_when_on() -> None:
    quiet = build("rewrite_seq", offset=5)
    quiet.process(packet(UP), UP, 0.0)
    assert quiet.change_log.entries == []
    logged = build("rewrite_seq", offset=5, log_changes=True, log_limit=2)
    for index in range(4):
        logged.process(packet(UP, seq=100 + index), UP, float(index))
    assert logged.change_log.entries == [
        {"time": 0.0, "direction": "upstream", "flow": "10.0.0.1:40000>10.0.1.1:5201",
         "change": "seq 100->105"},
        {"time": 1.0, "direction": "upstream", "flow": "10.0.0.1:40000>10.0.1.1:5201",
         "change": "seq 101->106"},
    ]
    assert logged.change_log.overflow == 2


def test_change_log_records_downstream_flow_as_it_arrived() -> None:
    box = build("strip_options", what=["dss"], log_changes=True)
    box.process(packet(DOWN, options=[Dss(data_ack=1)]), DOWN, 2.5)
    assert box.change_log.entries == [{"time": 2.5, "direction": "downstream",
                                       "flow": "10.0.1.1:5201>10.0.0.1:40000",
                                       "change": "stripped dss (remove)"}]
