"""The named networks, in one explicit table (no registration by import side effect).

Each builder takes keyword-only parameters (the `[topology.params]` table of a spec) and returns
a finalized `Topology`. Path parameters accept the LinkParams keys (rate_mbit, delay_ms,
jitter_ms, loss_pct, queue_pkts). Every builder takes `family` ("ipv4", "ipv6" or "dual"; see
testbed.net.topo and docs/ipv6.md).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from testbed.errors import SpecError
from testbed.net.topo import Topology
from topologies import dual_path, handover, lb, n_path, nat64_path, nat_home, proxy, two_path

TOPOLOGIES: dict[str, Callable[..., Topology]] = {
    "two_path": two_path.build,
    "n_path": n_path.build,
    "nat_home": nat_home.build,
    "handover": handover.build,
    "dual_path": dual_path.build,
    "lb": lb.build,
    "proxy": proxy.build,
    "nat64_path": nat64_path.build,
}


def build_topology(name: str, params: dict[str, Any] | None = None) -> Topology:
    """Build a named topology, turning unknown names and parameters into a SpecError."""
    builder = TOPOLOGIES.get(name)
    if builder is None:
        raise SpecError(f"unknown topology {name!r} (known: {', '.join(sorted(TOPOLOGIES))})")
    params = dict(params or {})
    accepted = inspect.signature(builder).parameters
    for key in params:
        if key not in accepted:
            raise SpecError(
                f"topology {name}: unknown parameter {key!r} (known: {', '.join(accepted)})"
            )
    try:
        topo = builder(**params)
    except TypeError as exc:
        raise SpecError(f"topology {name}: {exc}") from exc
    return topo.finalize()


def topology_parameters(name: str) -> dict[str, Any]:
    """The builder's parameters and defaults, for `testbed topo show`."""
    builder = TOPOLOGIES[name]
    return {
        p.name: (None if p.default is inspect.Parameter.empty else p.default)
        for p in inspect.signature(builder).parameters.values()
    }
