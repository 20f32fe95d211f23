"""testbed.sim: a deterministic simulated network in virtual time, for the bundled stack.

    network = SimNetwork(seed=1)                    # codec round trip per hop by default
    client = network.add_endpoint("client", host)   # anything with the PacketEndpoint shape
    router = network.add_router("r")
    network.add_link("path1", client, router, LinkParams(rate_mbit=20, delay_ms=10),
                     a_address="10.0.1.1", middleboxes=[...])
    network.cut_link_at(1.0, "path1")
    network.run(until=10.0, stop_when=lambda: done)

Modules: scheduler (event heap, virtual now), shaper (one link direction, with the link
parameters of testbed.net.params and the delay line of testbed.net.delayline), link (two
directions + middlebox chain + codec hops), nodes (endpoints with per-source routing, routers
with static routes), network (building and driving), stats (flow counters, byte series), rng
(per-component random streams), topology (from a named testbed topology), apps/transfer (bulk
transfer between two MptcpHosts, outcome classes), cli and bench (`testbed stack sim`,
`testbed stack bench`).
"""

from testbed.net.params import LinkParams
from testbed.sim.endpoint import PacketEndpoint
from testbed.sim.network import SimNetwork
from testbed.sim.scheduler import RunResult, SimulationError

__all__ = ["LinkParams", "PacketEndpoint", "RunResult", "SimNetwork",
           "SimulationError"]
