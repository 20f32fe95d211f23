"""`testbed matrix --family`: the IPv6 and dual-stack variants change the base topology only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from testbed.errors import SpecError
from testbed.matrix import load_matrix_spec
from testbed.matrix_family import DUAL_PATH_SERVER_IPV6, with_family

ROOT = Path(__file__).resolve().parents[3]
CI_SPEC = ROOT / "experiments" / "fallback_matrix_ci.toml"


def matrix_check(family: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "testbed.cli", "matrix", str(CI_SPEC), "--out",
                           "/nonexistent", "--family", family, "--check"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_ipv6_variant_keeps_rows_and_expectations() -> None:
    ipv4, ipv6 = load_matrix_spec(CI_SPEC), load_matrix_spec(CI_SPEC, "ipv6")
    assert ipv6.name == "fallback_matrix_ci-ipv6"
    assert [(c.key, c.expected) for c in ipv6.cells] == [(c.key, c.expected) for c in ipv4.cells]
    assert all(c.spec.topology == "two_path" and c.spec.topology_params["family"] == "ipv6"
               for c in ipv6.cells)
    assert all(c.spec.middleboxes == p.spec.middleboxes for c, p in zip(ipv6.cells, ipv4.cells, strict=True))


def test_dual_variant_is_dual_path_with_the_servers_ipv6_address_announced() -> None:
    dual = load_matrix_spec(CI_SPEC, "dual")
    assert dual.name == "fallback_matrix_ci-dual"
    for cell in dual.cells:
        assert cell.spec.topology == "dual_path" and "family" not in cell.spec.topology_params
        # announced where the client joins; a single-path cell sees no ADD_ADDR, as on two_path
        joins = cell.spec.mptcp.subflows > 0
        assert cell.spec.mptcp.server_signal == ((DUAL_PATH_SERVER_IPV6,) if joins else ())
    assert {c.row.name for c in dual.cells if c.spec.mptcp.server_signal} == {"none", "strip_mp_join"}
    join_row = next(c for c in dual.cells if c.row.name == "strip_mp_join")
    assert [b.node for b in join_row.spec.middleboxes] == ["mb_b"]  # the IPv6 path of dual_path


def test_refusals_are_one_line() -> None:
    raw = {"name": "m", "base": {"topology": {"name": "dual_path"}, "traffic": {"seconds": 1}}}
    with pytest.raises(SpecError, match="dual_path is dual stack by construction"):
        with_family(raw, "ipv6", "m.toml")
    raw["base"]["topology"]["name"] = "handover"
    with pytest.raises(SpecError, match="'handover' has no dual variant: use --family ipv6"):
        with_family(raw, "dual", "m.toml")
    with pytest.raises(SpecError, match="must be one of ipv4, ipv6, dual"):
        with_family(raw, "ipv5", "m.toml")
    done = matrix_check("ipv7")
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_check_lists_the_dual_variants_cells() -> None:
    done = matrix_check("dual")
    assert done.returncode == 0, done.stderr
    assert "6 cells (6 rows x 1 pairings): spec ok" in done.stdout


def test_ipv6_variant_of_the_full_matrix_leaves_the_nat44_rows_out_and_says_so() -> None:
    full = ROOT / "experiments" / "fallback_matrix.toml"
    ipv4, ipv6 = load_matrix_spec(full), load_matrix_spec(full, "ipv6")
    dropped = {r.name for r in ipv4.rows} - {r.name for r in ipv6.rows}
    assert dropped == {"nat", "nat_symmetric"}
    assert "rows nat, nat_symmetric left out" in ipv6.description
    assert all(c.row.name not in dropped for c in ipv6.cells)
    assert len(ipv6.cells) == len(ipv4.cells) - 2 * len(ipv4.pairings)
    assert {r.name for r in load_matrix_spec(full, "dual").rows} == {r.name for r in ipv4.rows}


@pytest.mark.parametrize("family", ["ipv6", "dual"])
def test_vm_pairings_on_an_ipv6_variant_are_refused_when_the_spec_loads(family: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_matrix_spec(ROOT / "experiments" / "fallback_matrix_kernels.toml", family)
    assert "VM endpoints are IPv4-only so far" in caught.value.message


def test_routed_rows_are_left_out_of_ipv6_variants_and_named() -> None:
    spec = ROOT / "experiments" / "fallback_matrix.toml"
    assert [r.name for r in load_matrix_spec(spec, "ipv4").routed][:2] == ["proxy", "proxy_path_cut"]
    variant = load_matrix_spec(spec, "dual")
    assert variant.routed == () and "rows proxy, proxy_path_cut, lb_hash" in variant.description
