"""One balancer experiment: a spec (experiments/lb/*.toml), the run, and its counts.

A spec names the balancer variant (variants.py), the remedy on the backends and the traffic:

    [balancer]   node = "lb", variant = "hash" | "table" | "token", remedy = "none" | "cflag",
                 backend_stack = "kernel" | "python"
    [client]     endpoint = "subflow" | "fullmesh"   (the flags of its second address's endpoint),
                 add_addr_accepted = 2                (its `ip mptcp limits`),
                 stack = "kernel" | "python"
    [traffic]    connections = 20, bytes = 100000, port = 5201, settle_s = 0.3

remedy "cflag" is issue 16's remedy (a): every backend sets the MP_CAPABLE C flag
(`net.mptcp.allow_join_initial_addr_port=0`: "do not join my initial address", which is the
VIP) and announces its own unicast address with ADD_ADDR (a `signal` endpoint). The token
variant is remedy (b); "none" with hash or table is (c), the failure for reference.

By default the client is the kernel's MPTCP with a `subflow` endpoint on its second address
(one join per connection, as a phone with Wi-Fi and cellular opens) and every backend runs the
kernel's MPTCP; with the python stack at either end, both ends run the testbed's endpoint
programs instead (stack_runs.py).
The counts come from the backends' MPTcpExt counters (deltas over the run) and the client's
per-connection records; everything is checked before anything is built.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from testbed import kernel_mptcp
from testbed.balancer import stack_runs
from testbed.balancer.variants import backends_of, check_balancer_node, check_variant, install
from testbed.command import run_command, stop_process
from testbed.errors import EnvironmentProblem, RunFailed, SpecError
from testbed.net.topo import Topology
from testbed.spec import read_toml
from testbed.spec_sections import reject_unknown, section
from topologies import build_topology

REMEDIES = ("none", "cflag")
SCHEMA_VERSION = 1
READY_TIMEOUT_S = 10.0
SPEC_KEYS = {"name", "description", "seed", "topology", "balancer", "client", "traffic"}
CLIENT_ENDPOINTS = ("subflow", "fullmesh")
BALANCER_KEYS = {"node", "variant", "remedy", "backend_stack"}
STACKS = ("kernel", "python")
TRAFFIC_KEYS = {"connections", "bytes", "port", "settle_s"}


@dataclass(frozen=True)
class LbSpec:
    name: str
    description: str
    seed: int
    topology_params: dict[str, Any]
    node: str
    variant: str
    remedy: str
    client_endpoint: str
    client_add_addr_accepted: int
    connections: int
    byte_count: int
    port: int
    settle_s: float
    client_stack: str = "kernel"
    backend_stack: str = "kernel"

    @property
    def endpoint_programs(self) -> bool:
        """The python stack at either end: both ends run the testbed's endpoint programs
        (stack_runs.py) instead of the balancer's own."""
        return "python" in (self.client_stack, self.backend_stack)


def _positive_int(value: object, what: str, where: str, lowest: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        raise SpecError(f"{where}: {what} = {value!r} must be an integer >= {lowest}")
    return value


def parse_spec(data: dict[str, Any], where: str) -> tuple[LbSpec, Topology]:
    """A checked spec and its topology (drawn, not built): every mistake is a SpecError."""
    reject_unknown(data, SPEC_KEYS, f"{where}:")
    topology = section(data, "topology", {"name", "params"}, where)
    if topology.get("name", "lb") != "lb":
        raise SpecError(f"{where}: [topology] name = {topology.get('name')!r}: a balancer experiment "
                        f"runs on topology \"lb\"")
    params = topology.get("params", {})
    if not isinstance(params, dict):
        raise SpecError(f"{where}: [topology.params] must be a table")
    topo = build_topology("lb", params)
    if topo.family != "ipv4":
        raise SpecError(f"{where}: [topology.params] family = {topo.family!r}: the balancers are IPv4 only "
                        f"so far (give family = \"ipv4\")")
    balancer = section(data, "balancer", BALANCER_KEYS, where)
    traffic = section(data, "traffic", TRAFFIC_KEYS, where)
    client = section(data, "client", {"endpoint", "add_addr_accepted", "stack"}, where)
    for what, stack in (("[client] stack", client.get("stack", "kernel")),
                        ("[balancer] backend_stack", balancer.get("backend_stack", "kernel"))):
        if stack not in STACKS:
            raise SpecError(f"{where}: {what} = {stack!r} (known: {', '.join(STACKS)})")
    client_endpoint = client.get("endpoint", "subflow")
    if client_endpoint not in CLIENT_ENDPOINTS:
        raise SpecError(f"{where}: [client] endpoint = {client_endpoint!r} "
                        f"(known: {', '.join(CLIENT_ENDPOINTS)})")
    variant = check_variant(balancer.get("variant", "hash"), f"{where}: [balancer] variant")
    remedy = balancer.get("remedy", "none")
    if remedy not in REMEDIES:
        raise SpecError(f"{where}: [balancer] remedy = {remedy!r} (known: {', '.join(REMEDIES)})")
    backends = list(getattr(topo, "backends", []))
    node = check_balancer_node(topo, balancer.get("node", "lb"), backends, f"{where}: [balancer]")
    settle_s = traffic.get("settle_s", 0.3)
    if isinstance(settle_s, bool) or not isinstance(settle_s, int | float) or not 0 <= settle_s <= 10:
        raise SpecError(f"{where}: [traffic] settle_s = {settle_s!r} must be seconds in 0..10")
    spec = LbSpec(
        name=str(data.get("name", Path(where).stem)), description=str(data.get("description", "")),
        seed=_positive_int(data.get("seed", 1), "seed", where, 0), topology_params=dict(params),
        node=node, variant=variant, remedy=str(remedy), client_endpoint=str(client_endpoint),
        client_add_addr_accepted=_positive_int(client.get("add_addr_accepted", 2),
                                               "[client] add_addr_accepted", where, 0),
        connections=_positive_int(traffic.get("connections", 20), "[traffic] connections", where),
        byte_count=_positive_int(traffic.get("bytes", 100_000), "[traffic] bytes", where),
        port=_positive_int(traffic.get("port", 5201), "[traffic] port", where),
        settle_s=float(settle_s),
        client_stack=str(client.get("stack", "kernel")),
        backend_stack=str(balancer.get("backend_stack", "kernel")),
    )
    if spec.port > 65535:
        raise SpecError(f"{where}: [traffic] port = {spec.port} is not a TCP port")
    return spec, topo


def load_spec(path: Path) -> tuple[LbSpec, Topology]:
    return parse_spec(read_toml(path), str(path))


def _configure_mptcp(net: Any, spec: LbSpec, topo: Topology) -> None:
    client_second = topo.links["b"].a_interface
    client_netns = net.netns("client")
    kernel_mptcp.configure(client_netns, subflows=2, add_addr_accepted=spec.client_add_addr_accepted,
                           checksum=False)
    flags = ["subflow"] if spec.client_endpoint == "subflow" else ["subflow", "fullmesh"]
    run_command(["ip", "-n", client_netns, "mptcp", "endpoint", "add", client_second.address.split("/")[0],
                 "dev", client_second.name, *flags], what="the client's second-address endpoint")
    for backend in topo.backends:  # type: ignore[attr-defined]
        link, iface, _peer = topo.l3_interfaces(backend)[0]
        signal = ((link.address_of(backend), iface.name),) if spec.remedy == "cflag" else ()
        kernel_mptcp.configure(net.netns(backend), subflows=4, add_addr_accepted=0, checksum=False,
                               signal_endpoints=signal)
        allow = "0" if spec.remedy == "cflag" else "1"
        run_command(["sysctl", "-q", "-w", f"net.mptcp.allow_join_initial_addr_port={allow}"],
                    netns=net.netns(backend), what=f"the C flag on {backend}")


def _start_servers(net: Any, spec: LbSpec, names: list[str], work_dir: Path) -> dict[str, subprocess.Popen]:
    servers = {}
    for name in names:
        ready = work_dir / f"{name}.ready"
        servers[name] = net.popen(name, [sys.executable, "-m", "testbed.balancer.endpoints", "server",
                                         "--name", name, "--port", str(spec.port), "--ready", str(ready)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + READY_TIMEOUT_S
    for name, process in servers.items():
        while not (work_dir / f"{name}.ready").exists():
            if process.poll() is not None or time.monotonic() > deadline:
                said = process.stderr.read().decode()[-300:] if process.poll() is not None else "timed out"
                raise EnvironmentProblem(f"the server on {name} did not start: {said}")
            time.sleep(0.05)
    return servers


def _start_capture(net: Any, spec: LbSpec, path: Path) -> subprocess.Popen:
    """tcpdump on every interface of the balancer, started once it says it is listening.
    --immediate-mode: without it, packets still in the ring buffer when tcpdump is told to
    stop are counted "received by filter" but never written (a 50 ms run kept nothing)."""
    process = net.popen(spec.node, ["tcpdump", "-i", "any", "-n", "-s", "200", "-U", "-Z", "root",
                                    "--immediate-mode", "-w", str(path), "tcp", "port", str(spec.port)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    line = ""
    for _ in range(4):  # "data link type LINUX_SLL2", then "listening on any, ..."
        line = process.stderr.readline().decode(errors="replace")
        if not line.startswith("tcpdump: data link type"):
            break
    if "listening" not in line:
        stop_process(process)
        raise EnvironmentProblem(f"tcpdump on {spec.node} did not start: {line.strip()}")
    return process


def connection_class(record: dict[str, Any], joins_tried: bool) -> str:
    """A connection's outcome in the matrix's vocabulary (testbed.outcome), with the subflow
    count on `mptcp`: reset (the transfer failed), fallback-syn, subflow-rejected (one subflow
    while joins were tried in this run: the client does not say which of its joins failed,
    the backends' counters do), mptcp/N."""
    if record.get("error") or not record.get("intact"):
        return "reset"
    if record.get("mptcp") is False:
        return "fallback-syn"
    subflows = int(record.get("subflows", 1))
    if subflows < 2 and joins_tried:
        return "subflow-rejected"
    return f"mptcp/{subflows}"


def summarize(records: list[dict[str, Any]], per_backend: dict[str, dict[str, int]],
              client_counters: dict[str, int]) -> dict[str, Any]:
    """The outcome counts of one run, from the client's records and the counter deltas."""
    joins_tried = client_counters.get("MPTcpExtMPJoinSynTx", 0) > 0
    classes = Counter(connection_class(r, joins_tried) for r in records)
    subflows = Counter(int(r.get("subflows", 1)) for r in records)
    served = Counter(str(r.get("backend", "-")) for r in records)
    joins_refused = sum(c.get("MPTcpExtMPJoinNoTokenFound", 0) for c in per_backend.values())
    return {
        "connections": len(records),
        "outcome_classes": dict(sorted(classes.items())),
        "intact": sum(1 for r in records if r.get("intact")),
        "errors": sum(1 for r in records if r.get("error")),
        "fell_back": sum(1 for r in records if r.get("mptcp") is False),
        "subflows_per_connection": {str(k): subflows[k] for k in sorted(subflows)},
        "connections_with_a_join": sum(n for k, n in subflows.items() if k >= 2),
        # a join from the same address as the first subflow adds a subflow but not a path
        "connections_on_both_client_paths": sum(1 for r in records
                                                if len(set(r.get("subflow_sources") or [])) >= 2),
        "joins_received_by_backends": sum(c.get("MPTcpExtMPJoinSynRx", 0) for c in per_backend.values()),
        "joins_established": sum(c.get("MPTcpExtMPJoinAckRx", 0) for c in per_backend.values()),
        "joins_refused": joins_refused,
        "add_addr_received_by_client": client_counters.get("MPTcpExtAddAddr", 0),
        "median_duration_s": (statistics.median(float(r.get("duration_s", 0.0)) for r in records)
                              if records else None),
        "per_backend": {
            name: {"connections": served.get(name, 0),
                   "MPJoinNoTokenFound": counters.get("MPTcpExtMPJoinNoTokenFound", 0),
                   "MPJoinSynRx": counters.get("MPTcpExtMPJoinSynRx", 0),
                   "MPJoinAckRx": counters.get("MPTcpExtMPJoinAckRx", 0)}
            for name, counters in per_backend.items()},
    }


def run_lb(spec: LbSpec, topo: Topology, out_dir: Path, *, capture: bool = False,
           before_client: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Build lb, install the balancer, run the connections, return (and write) the result.
    `capture`: tcpdump on every interface of the balancer node into out_dir/balancer.pcap;
    `before_client(net)` runs once everything is up (tests send hostile packets from it)."""
    from testbed.net.build import Network
    from testbed.net.state import RunState
    from testbed.runner import detect_backends, sigterm_as_interrupt

    backends_found = detect_backends()
    out_dir.mkdir(parents=True, exist_ok=True)
    names: list[str] = list(topo.backends)  # type: ignore[attr-defined]
    vip: str = topo.vip  # type: ignore[attr-defined]
    state = RunState.create()
    work_dir = Path(state.work_dir)
    started = time.time()
    balancer = None
    servers: dict[str, subprocess.Popen] = {}
    try:
        with sigterm_as_interrupt(), Network(topo, backends_found, state) as net:
            _configure_mptcp(net, spec, topo)
            balancer = install(net, spec.node, spec.variant, vip, spec.port,
                               backends_of(topo, spec.node, names), work_dir)
            unicasts = {n: topo.l3_interfaces(n)[0][0].address_of(n) for n in names}
            servers = (stack_runs.start_servers(net, spec, names, vip, unicasts) if spec.endpoint_programs
                       else _start_servers(net, spec, names, work_dir))
            if capture:
                servers["tcpdump"] = _start_capture(net, spec, out_dir / "balancer.pcap")
            if before_client is not None:
                before_client(net)
            nodes = ["client", *names]
            before = {n: kernel_mptcp.read_counters(net.node_pid(n)) for n in nodes}
            if spec.endpoint_programs:
                outcomes = stack_runs.run_clients(
                    net, spec, vip, [a.split("/")[0] for a in topo.host_addresses("client")])
                time.sleep(0.2)  # let the last subflows' closes reach the counters
                after = {n: kernel_mptcp.read_counters(net.node_pid(n)) for n in nodes}
                deltas = {n: kernel_mptcp.counter_deltas(before[n], after[n]) for n in nodes}
                served = stack_runs.stop_servers({n: servers.pop(n) for n in names})
                records = stack_runs.connection_records(spec, outcomes, served)
                server_counts = [{"name": n, "served": len(r)} for n, r in served.items()]
                if "tcpdump" in servers:
                    stop_process(servers.pop("tcpdump"))
                balancer_stats = balancer.stop()
                return _finish(spec, topo, out_dir, started, records, deltas, server_counts,
                               balancer_stats, names)
            client = net.popen("client", [
                sys.executable, "-m", "testbed.balancer.endpoints", "client", "--address", vip,
                "--port", str(spec.port), "--connections", str(spec.connections),
                "--bytes", str(spec.byte_count), "--seed", str(spec.seed), "--settle-s", str(spec.settle_s)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            timeout = 30 + spec.connections * (spec.settle_s + 5)
            try:
                out, err = client.communicate(timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                client.kill()
                client.communicate()
                raise RunFailed(f"lb: the client did not finish {spec.connections} connections "
                                f"in {timeout:.0f} s") from exc
            if client.returncode != 0:
                raise RunFailed(f"lb: the client exited {client.returncode}: {err.decode()[-300:]}")
            time.sleep(0.2)  # let the last subflows' closes reach the counters
            after = {n: kernel_mptcp.read_counters(net.node_pid(n)) for n in nodes}
            deltas = {n: kernel_mptcp.counter_deltas(before[n], after[n]) for n in nodes}
            server_counts = [json.loads(line) for name, s in servers.items() if name in names
                             for line in stop_process(s).splitlines() if line.startswith("{")]
            if "tcpdump" in servers:
                stop_process(servers["tcpdump"])
            servers = {}
            balancer_stats = balancer.stop()
    finally:
        for process in servers.values():
            stop_process(process)
        if balancer is not None:
            balancer.stop()
        state.remove()
    records = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    return _finish(spec, topo, out_dir, started, records, deltas, server_counts, balancer_stats, names)


def _finish(spec: LbSpec, topo: Topology, out_dir: Path, started: float, records: list[dict[str, Any]],
            deltas: dict[str, dict[str, int]], server_counts: list[Any], balancer_stats: Any,
            names: list[str]) -> dict[str, Any]:
    """The result (written to out_dir/result.json): the counts, and every record behind them."""
    client_counters = dict(deltas["client"])
    if spec.client_stack == "python":  # its joins are in its own counters, not the namespace's
        client_counters.update(stack_runs.python_client_counters(records))
    counts = summarize(records, {n: deltas[n] for n in names}, client_counters)
    if spec.backend_stack == "python":  # a refused join belongs to no connection's report
        counts.update(joins_received_by_backends=None, joins_established=None, joins_refused=None)
    result = {
        "schema": SCHEMA_VERSION,
        "kind": "lb",
        "spec": asdict(spec),
        "topology": topo.describe(),
        "started": started,
        "load_average": Path("/proc/loadavg").read_text().split()[:3],
        "counts": counts,
        "balancer": balancer_stats,
        "servers": server_counts,
        "counters": deltas,
        "connections": records,
    }
    (out_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def format_classes(classes: dict[str, int]) -> str:
    return " · ".join(f"{name} {count}" for name, count in classes.items())


def format_table(results: list[dict[str, Any]]) -> str:
    """One row per run: its client-backends pairing and outcome classes, as a matrix row's."""
    rows = [("spec", "balancer", "remedy", "client-backends", "outcome classes", "refused", "both paths")]
    for result in results:
        spec, counts = result["spec"], result["counts"]
        refused = counts["joins_refused"]
        rows.append((spec["name"], spec["variant"], spec["remedy"], _pairing(spec),
                     format_classes(counts["outcome_classes"]), "-" if refused is None else str(refused),
                     f"{counts['connections_on_both_client_paths']}/{counts['connections']}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def _pairing(spec: dict[str, Any]) -> str:
    return f"{spec.get('client_stack', 'kernel')}-{spec.get('backend_stack', 'kernel')}"


def format_counts(result: dict[str, Any]) -> str:
    spec, counts = result["spec"], result["counts"]
    subflows = ", ".join(f"{k} subflow{'s' if k != '1' else ''}: {n}"
                         for k, n in counts["subflows_per_connection"].items())
    lines = [
        f"{spec['name']}: balancer {spec['variant']}, remedy {spec['remedy']}, "
        f"{_pairing(spec)} (client-backends), {counts['connections']} connections",
        f"  outcome classes: {format_classes(counts['outcome_classes'])}",
        f"  intact transfers: {counts['intact']}/{counts['connections']}  "
        f"fell back to TCP: {counts['fell_back']}  errors: {counts['errors']}",
        f"  subflows per connection: {subflows}  (over both client paths: "
        f"{counts['connections_on_both_client_paths']})",
    ]
    counted = counts["joins_refused"] is not None  # not with python backends
    lines.append(f"  joins at the backends: {counts['joins_received_by_backends']} received, "
                 f"{counts['joins_established']} established, {counts['joins_refused']} refused "
                 "(MPJoinNoTokenFound)" if counted else
                 "  joins at the backends: not counted (a python backend's refusal belongs to no "
                 "connection's report)")
    for name, row in counts["per_backend"].items():
        lines.append(f"  {name}: {row['connections']} connections" + (
            f", MPJoinNoTokenFound {row['MPJoinNoTokenFound']}, joins established {row['MPJoinAckRx']}"
            if counted else ""))
    if result.get("balancer"):
        stats = {k: v for k, v in result["balancer"].items() if k != "exit_status"}
        lines.append(f"  token balancer: {', '.join(f'{k} {v}' for k, v in stats.items())}")
    return "\n".join(lines)
