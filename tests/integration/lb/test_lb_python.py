"""The python stack behind and in front of the real balancers (issue 16, points 2 and 3): the
C flag set by python backends and honoured by a python client, the failure without a remedy,
and the token-aware balancer, each checked end to end (both ends' SHA-256) on the lb topology."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from testbed.balancer.experiment import load_spec, run_lb

pytestmark = pytest.mark.usefixtures("needs_root_and_tools")
SPECS = Path(__file__).resolve().parents[3] / "experiments" / "lb"
CONNECTIONS = 6
BYTES = 1_000_000  # a join opens well before the transfer ends


def run(spec_name: str, client: str, backends: str, tmp_path: Path) -> dict[str, Any]:
    spec, topo = load_spec(SPECS / f"{spec_name}.toml")
    spec = replace(spec, connections=CONNECTIONS, byte_count=BYTES, client_stack=client,
                   backend_stack=backends)
    result = run_lb(spec, topo, tmp_path)
    counts = result["counts"]
    assert counts["connections"] == CONNECTIONS and counts["errors"] == 0, result["connections"]
    assert counts["intact"] == CONNECTIONS, result["connections"]  # each checked at the backend
    served = sum(row["connections"] for row in counts["per_backend"].values())
    assert served == CONNECTIONS  # every stream found at the backend that received it
    return result


@pytest.mark.parametrize(("client", "backends"), [("python", "kernel"), ("kernel", "python"),
                                                  ("python", "python")])
def test_c_flag_and_announced_addresses_give_every_connection_its_join(client: str, backends: str,
                                                                       tmp_path: Path) -> None:
    """The backends say "no join to my initial address" (the VIP) and announce their own: no
    join reaches a backend that did not issue its token, every connection gets more subflows."""
    counts = run("cflag_hash", client, backends, tmp_path)["counts"]
    assert set(counts["outcome_classes"]) <= {"mptcp/2", "mptcp/3"}, counts["outcome_classes"]
    if backends == "kernel":
        assert counts["joins_refused"] == 0  # the python client sent no join to the VIP
    if client == "python":  # joins to the announced address from both client addresses
        assert counts["connections_on_both_client_paths"] == CONNECTIONS


def test_without_a_remedy_python_joins_to_the_vip_reach_backends_that_refuse_them(tmp_path: Path) -> None:
    counts = run("none_hash", "python", "python", tmp_path)["counts"]
    assert counts["outcome_classes"].get("subflow-rejected", 0) >= 1, counts["outcome_classes"]
    assert counts["joins_refused"] is None  # a python backend's refusal is in no report


def test_the_token_aware_balancer_routes_python_joins_home(tmp_path: Path) -> None:
    result = run("token", "python", "python", tmp_path)
    assert result["counts"]["outcome_classes"] == {"mptcp/2": CONNECTIONS}
    assert result["balancer"]["joins_by_token"] == CONNECTIONS
