"""n_path: N parallel paths between a multihomed client and a single-homed server.

    client -eth{i}--[mb_{i}]-- r{i} --+-- rs ---- server     (i = 0 .. N-1, path names p0..)

Same shape as two_path, generalised; `paths` overrides parameters per path by index.
"""

from __future__ import annotations

from typing import Any

from testbed.errors import SpecError
from testbed.net.topo import Topology
from topologies._paths import path_params

MAX_PATHS = 8


def build(
    *,
    n: int = 3,
    rate_mbit: float | None = 100.0,
    delay_ms: float = 0.0,
    jitter_ms: float = 0.0,
    loss_pct: float = 0.0,
    queue_pkts: int | None = None,
    paths: list[dict[str, Any]] | None = None,
    family: str = "ipv4",
) -> Topology:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_PATHS:
        raise SpecError(f"n_path: n={n!r} must be an integer from 1 to {MAX_PATHS}")
    overrides = list(paths or [])
    if len(overrides) > n:
        raise SpecError(f"n_path: {len(overrides)} entries in paths for n={n}")
    overrides += [{}] * (n - len(overrides))
    common = {"rate_mbit": rate_mbit, "delay_ms": delay_ms, "jitter_ms": jitter_ms,
              "loss_pct": loss_pct, "queue_pkts": queue_pkts}
    topo = Topology("n_path", f"client with {n} parallel paths to a single-homed server", family=family)
    client = topo.client = topo.add_host("client")
    server = topo.server = topo.add_host("server")
    rs = topo.add_router("rs")
    for i in range(n):
        router = topo.add_router(f"r{i}")
        bump = topo.add_middlebox(f"mb_{i}")
        topo.add_link(client, router, name=f"p{i}", via=[bump], subnet=f"10.0.{i + 1}.0/24",
                      params=path_params(common, overrides[i], f"n_path.paths[{i}]"))
        topo.add_link(router, rs, name=f"core_{i}", subnet=f"10.0.{i + 11}.0/24")
    topo.add_link(rs, server, name="server", subnet="10.0.100.0/24")
    return topo
