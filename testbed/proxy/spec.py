"""A proxy spec (experiments/proxy/*.toml), checked before anything is built.

    [topology]  name = "proxy", [topology.params] rate_mbit = 50, ...
    [proxy]     node = "proxy", server = "server", variant = "kernel" | "python" | "none"
    [client]    stack = "kernel" | "python", endpoint = "subflow" | "fullmesh" (the kernel
                client's second-address endpoint flags; the python client uses both addresses)
    [traffic]   mode = "bulk" | "echo", bytes = 50_000_000, repeats = 3, port = 5201,
                cut_path = "a", cut_at_s = 1.0, size = 64, exchanges = 200

variant "kernel": the kernel proxy (relay_kernel.py) intercepts on `node`, the client speaks
MPTCP over both paths. variant "python": the same with the bundled python stack terminating
MPTCP on `node` (relay_stack.py). variant "none": no proxy, the node only routes; the client speaks plain
TCP over path a, the reference a proxy is compared with. `server` has no default on purpose:
it is the legacy host the client addresses, and a proxy spec must say which.

`short_circuit_port`: issue 16's "beyond the proxy". The server speaks MPTCP
and also listens on this port; the proxy announces the server's address with this port
(ADD_ADDR from a `signal` endpoint), which it does not intercept, and the client accepts one
ADD_ADDR. Does the client join the server directly, and what happens there? The relay listens
on the server's own port: Linux refuses a join whose listener port differs from the port of
the connection's first subflow (MismatchPortSynRx), so TPROXY to another port loses the joins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.errors import SpecError
from testbed.net.topo import Topology
from testbed.proxy.intercept import check_proxy_node
from testbed.spec import read_toml
from testbed.spec_sections import reject_unknown, section
from topologies import build_topology

VARIANTS = ("kernel", "python", "none")
MODES = ("bulk", "echo")
CLIENT_ENDPOINTS = ("subflow", "fullmesh")
CLIENT_STACKS = ("kernel", "python")
SPEC_KEYS = {"name", "description", "seed", "topology", "proxy", "client", "traffic"}
PROXY_KEYS = {"node", "server", "variant", "short_circuit_port"}
TRAFFIC_KEYS = {"mode", "bytes", "repeats", "port", "cut_path", "cut_at_s", "size", "exchanges"}


@dataclass(frozen=True)
class ProxySpec:
    name: str
    description: str
    seed: int
    topology_params: dict[str, Any]
    node: str
    server: str
    variant: str
    client_endpoint: str
    client_stack: str
    short_circuit_port: int | None
    mode: str
    byte_count: int
    repeats: int
    port: int
    cut_path: str | None
    cut_at_s: float
    size: int
    exchanges: int


def _integer(value: object, what: str, where: str, lowest: int = 1, highest: int | None = None) -> int:
    if (isinstance(value, bool) or not isinstance(value, int) or value < lowest
            or (highest is not None and value > highest)):
        bound = f" and <= {highest}" if highest is not None else ""
        raise SpecError(f"{where}: {what} = {value!r} must be an integer >= {lowest}{bound}")
    return value


def _choice(value: object, known: tuple[str, ...], what: str, where: str) -> str:
    if value not in known:
        raise SpecError(f"{where}: {what} = {value!r} is unknown (known: {', '.join(known)})")
    return str(value)


def _short_circuit(proxy: dict[str, Any], variant: str, where: str) -> int | None:
    """The port the server also listens on, which the proxy announces with the server's
    address (ADD_ADDR) in the short-circuit experiment; None: no short-circuit."""
    port = proxy.get("short_circuit_port")
    if port is None:
        return None
    port = _integer(port, "[proxy] short_circuit_port", where, 1, 65535)
    if variant == "none":
        raise SpecError(f"{where}: [proxy] short_circuit_port needs a proxy to announce the server's address "
                        f"(give variant = \"kernel\" or \"python\")")
    return port


def parse_spec(data: dict[str, Any], where: str) -> tuple[ProxySpec, Topology]:
    """A checked spec and its topology (drawn, not built): every mistake is a SpecError."""
    reject_unknown(data, SPEC_KEYS, f"{where}:")
    topology = section(data, "topology", {"name", "params"}, where)
    params = topology.get("params", {})
    if not isinstance(params, dict):
        raise SpecError(f"{where}: [topology.params] must be a table")
    topo = build_topology(str(topology.get("name", "proxy")), params)
    if topo.family != "ipv4":
        raise SpecError(f"{where}: [topology.params] family = {topo.family!r}: the proxy is IPv4 only so far "
                        f"(give family = \"ipv4\")")
    proxy = section(data, "proxy", PROXY_KEYS, where)
    client = section(data, "client", {"endpoint", "stack"}, where)
    traffic = section(data, "traffic", TRAFFIC_KEYS, where)
    variant = _choice(proxy.get("variant", "kernel"), VARIANTS, "[proxy] variant", where)
    node, server = check_proxy_node(topo, proxy.get("node", "proxy"), proxy.get("server"),
                                    f"{where}: [proxy]")
    cut_path = traffic.get("cut_path")
    if cut_path is not None and (cut_path not in topo.links or topo.links[cut_path].a != topo.client):
        paths = [n for n, link in topo.links.items() if link.a == topo.client]
        raise SpecError(f"{where}: [traffic] cut_path = {cut_path!r} is not one of the client's paths "
                        f"(paths: {', '.join(paths)})")
    cut_at_s = traffic.get("cut_at_s", 1.0)
    if isinstance(cut_at_s, bool) or not isinstance(cut_at_s, int | float) or not 0 < cut_at_s <= 60:
        raise SpecError(f"{where}: [traffic] cut_at_s = {cut_at_s!r} must be seconds in (0, 60]")
    mode = _choice(traffic.get("mode", "bulk"), MODES, "[traffic] mode", where)
    if spec_port_clash(proxy, traffic):
        raise SpecError(f"{where}: [proxy] short_circuit_port is the server's port: give another (the proxy "
                        f"intercepts that one)")
    if cut_path is not None and mode != "bulk":
        raise SpecError(f"{where}: [traffic] cut_path needs mode = \"bulk\" (a transfer to cut)")
    spec = ProxySpec(
        name=str(data.get("name", Path(where).stem)), description=str(data.get("description", "")),
        seed=_integer(data.get("seed", 1), "seed", where, 0), topology_params=dict(params),
        node=node, server=server, variant=variant,
        client_endpoint=_choice(client.get("endpoint", "subflow"), CLIENT_ENDPOINTS, "[client] endpoint",
                                where),
        client_stack=_choice(client.get("stack", "kernel"), CLIENT_STACKS, "[client] stack", where),
        short_circuit_port=_short_circuit(proxy, variant, where),
        mode=mode,
        byte_count=_integer(traffic.get("bytes", 20_000_000), "[traffic] bytes", where),
        repeats=_integer(traffic.get("repeats", 3), "[traffic] repeats", where, 1, 50),
        port=_integer(traffic.get("port", 5201), "[traffic] port", where, 1, 65535),
        cut_path=cut_path, cut_at_s=float(cut_at_s),
        size=_integer(traffic.get("size", 64), "[traffic] size", where, 1, 65536),
        exchanges=_integer(traffic.get("exchanges", 200), "[traffic] exchanges", where, 1, 100_000),
    )
    return spec, topo


def spec_port_clash(proxy: dict[str, Any], traffic: dict[str, Any]) -> bool:
    return proxy.get("short_circuit_port") is not None and \
        proxy.get("short_circuit_port") == traffic.get("port", 5201)


def load_spec(path: Path) -> tuple[ProxySpec, Topology]:
    return parse_spec(read_toml(path), str(path))
