"""`testbed matrix --family`: one matrix spec run as its IPv4, IPv6 or dual-stack variant.

The variants change the base topology only, so every row, expectation and pairing stays the
one the spec wrote (the outcomes are meant to be compared with IPv4's, docs/ipv6.md):

* `ipv6`: the base topology with `family = "ipv6"` (every shipped topology takes it). Rows
  with a box that acts on IPv4 only (`nat`, a NAT44: testbed.net.families.IPV4_ONLY_BOXES)
  are left out, and the description says which: on an IPv6-only link it would do nothing.
* `dual`: two_path becomes dual_path, the phone case: path a (node mb_a, the initial subflow) is
  IPv4 behind a NAT, path b (mb_b, the join) IPv6-only, and the server announces its IPv6
  address ([mptcp].server_signal) so that the client can join over path b -- in the cells that
  join (`subflows` > 0) only: on two_path a single-path cell sees no ADD_ADDR, and an
  announcement changes what Linux does behind some boxes (a DSS-stripping box then corrupts
  the stream instead of causing a fallback, docs/ipv6.md), which would not compare with IPv4.
* `ipv4`: the base topology with `family = "ipv4"`.

The matrix's name gets the family as a suffix, so its tables and results say which variant ran.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from testbed.errors import SpecError

FAMILIES = ("ipv4", "ipv6", "dual")
DUAL_PATH_SERVER_IPV6 = "fd00:10:0:100::2"  # checked against the topology when the cells are built


def with_family(raw: dict[str, Any], family: str, source: str) -> dict[str, Any]:
    """A copy of a raw matrix spec whose base topology carries `family`."""
    if family not in FAMILIES:
        raise SpecError(f"--family {family!r}: must be one of {', '.join(FAMILIES)}")
    out = copy.deepcopy(raw)
    base = out.get("base")
    topology = base.get("topology") if isinstance(base, dict) else None
    if not isinstance(topology, dict) or not isinstance(topology.get("name"), str):
        return out  # parse_matrix_spec names what is missing
    params = topology.setdefault("params", {})
    if not isinstance(params, dict):
        return out
    if family == "dual":
        if topology["name"] not in ("two_path", "dual_path"):
            raise SpecError(f"{source}: --family dual runs two_path as dual_path (mb_a on the IPv4 "
                            f"path, mb_b on the IPv6 one); {topology['name']!r} has no dual variant: "
                            "use --family ipv6, or [topology.params] family = \"dual\" in the spec")
        topology["name"] = "dual_path"
        params.pop("family", None)
        mptcp = base.setdefault("mptcp", {})
        if isinstance(mptcp, dict) and not mptcp.get("server_signal"):
            mptcp["server_signal"] = [DUAL_PATH_SERVER_IPV6]
    else:
        if topology["name"] == "dual_path":
            raise SpecError(f"{source}: --family {family}: dual_path is dual stack by construction; "
                            "use two_path for a single family")
        params["family"] = family
    if isinstance(out.get("name"), str):
        out["name"] = f"{out['name']}-{family}"
    return out


def without_needless_announcement(cell: Any) -> Any:
    """A dual variant's cell that opens no join subflow, without the server's announcement."""
    mptcp = cell.spec.mptcp
    if mptcp.subflows > 0 or mptcp.server_signal != (DUAL_PATH_SERVER_IPV6,):
        return cell
    spec = dataclasses.replace(cell.spec, mptcp=dataclasses.replace(mptcp, server_signal=()))
    return dataclasses.replace(cell, spec=spec)


def without_ipv4_only_rows(matrix: Any) -> Any:
    """The IPv6 variant of a parsed matrix without the rows of IPv4-only boxes (named in its
    description)."""
    from testbed.net.families import IPV4_ONLY_BOXES

    dropped = [row.name for row in matrix.rows
               if any(box.get("type") in IPV4_ONLY_BOXES for box in row.middleboxes)]
    if not dropped:
        return matrix
    note = (f" IPv6 variant: rows {', '.join(dropped)} left out ({', '.join(sorted(IPV4_ONLY_BOXES))} "
            "acts on IPv4 only).")
    return dataclasses.replace(
        matrix, description=matrix.description + note,
        rows=tuple(r for r in matrix.rows if r.name not in dropped),
        cells=tuple(c for c in matrix.cells if c.row.name not in dropped))


def without_routed_rows(matrix: Any, family: str) -> Any:
    """An IPv6 or dual variant without the proxy and balancer rows: both drivers are IPv4 only
    (testbed.proxy.spec, testbed.balancer.experiment), so the variant says it left them out."""
    if not matrix.routed:
        return matrix
    note = (f" {family} variant: rows {', '.join(r.name for r in matrix.routed)} left out (the proxy "
            "and the balancer are IPv4 only).")
    return dataclasses.replace(matrix, description=matrix.description + note, routed=())
