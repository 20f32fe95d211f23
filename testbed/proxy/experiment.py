"""One proxy experiment: build topology proxy, start the server, the proxy and the client runs.

The server's namespace has MPTCP disabled (a legacy host). With variant "kernel" the proxy node
gets the kernel's MPTCP (limits that let the client's join in), the interception (intercept.py)
and the relay (relay_kernel.py); the client has a `subflow` endpoint on its second address, so
its join to the server's address crosses path b and is intercepted like the first subflow.
With variant "python" the bundled stack on the proxy node answers as the server's address
(relay_stack.py) and the node's kernel MPTCP is not involved. With variant "none" the proxy
node only routes and the client speaks plain TCP over path a.

Each of `repeats` runs is one client connection (a bulk transfer or an echo exchange); a cut
takes the client's path down `cut_at_s` after the client connected and brings it back up
after the run. The result keeps every run's record and the medians.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from testbed import kernel_mptcp
from testbed.command import run_command, stop_process
from testbed.errors import EnvironmentProblem, RunFailed
from testbed.net.topo import Topology
from testbed.proxy import intercept, stack_client
from testbed.proxy.spec import ProxySpec

SCHEMA_VERSION = 1
READY_TIMEOUT_S = 10.0
RUN_TIMEOUT_S = 120.0


def _wait_ready(process: subprocess.Popen, ready: Path, what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            said = process.stderr.read().decode()[-300:] if process.poll() is not None and process.stderr \
                else "timed out"
            raise EnvironmentProblem(f"{what} did not start: {said}")
        time.sleep(0.05)


def _configure(net: Any, spec: ProxySpec, topo: Topology, server_address: str) -> None:
    short = spec.short_circuit_port
    if short is None:
        kernel_mptcp.disable(net.netns(spec.server))
    else:  # a server that speaks MPTCP itself
        kernel_mptcp.configure(net.netns(spec.server), subflows=4, add_addr_accepted=0, checksum=False)
    if spec.variant == "none":
        return
    second = topo.links["b"].a_interface
    kernel_mptcp.configure(net.netns("client"), subflows=3, add_addr_accepted=0 if short is None else 1,
                           checksum=False)
    flags = ["subflow"] if spec.client_endpoint == "subflow" else ["subflow", "fullmesh"]
    run_command(["ip", "-n", net.netns("client"), "mptcp", "endpoint", "add", second.address.split("/")[0],
                 "dev", second.name, *flags], what="the client's second-address endpoint")
    if spec.variant == "kernel":
        kernel_mptcp.configure(net.netns(spec.node), subflows=4, add_addr_accepted=0, checksum=False)
        if short is not None:  # ADD_ADDR of the server's address and the other port: the
            # endpoint's join listener binds an address that is not the node's own
            run_command(["sysctl", "-q", "-w", "net.ipv4.ip_nonlocal_bind=1"], netns=net.netns(spec.node),
                        what="ip_nonlocal_bind on the proxy node")
            run_command(["ip", "-n", net.netns(spec.node), "mptcp", "endpoint", "add", server_address, "port",
                         str(short), "signal"], what="the proxy's announcement of the server's address")
    else:  # the python stack sends as the server's address, which is not the node's own
        run_command(["sysctl", "-q", "-w", "net.ipv4.ip_nonlocal_bind=1"], netns=net.netns(spec.node),
                    what="ip_nonlocal_bind on the proxy node")


def _client_command(spec: ProxySpec, server_address: str, bind: str, seed: int) -> list[str]:
    command = [sys.executable, "-m", "testbed.proxy.endpoints", "client", "--address", server_address,
               "--port", str(spec.port), "--mode", spec.mode, "--bytes", str(spec.byte_count),
               "--seed", str(seed), "--size", str(spec.size), "--exchanges", str(spec.exchanges)]
    if spec.variant == "none":
        command += ["--tcp", "--bind", bind]
    return command


def stall_after(record: dict[str, Any], cut_time: float) -> float | None:
    """The longest pause in the server's reads that ended after the cut: the time the transfer
    took to recover (None when the server never paused 20 ms after it)."""
    stalls = [length for start, length in record.get("gaps", []) if start + length >= cut_time]
    return max(stalls) if stalls else None


def _one_run(net: Any, spec: ProxySpec, command: list[str]) -> dict[str, Any]:
    client = net.popen("client", command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert client.stdout is not None
    cut_time = None
    try:
        first = client.stdout.readline().decode(errors="replace")
        if spec.cut_path and first.startswith("started "):
            cut_time = float(first.split()[1]) + spec.cut_at_s
            time.sleep(max(0.0, cut_time - time.monotonic()))
            if client.poll() is None:
                net.set_link_up(spec.cut_path, False)
                cut_time = time.monotonic()
            else:
                cut_time = None
        out, err = client.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        client.kill()
        client.communicate()
        raise RunFailed(f"proxy: the client did not finish in {RUN_TIMEOUT_S:.0f} s") from exc
    finally:
        if cut_time is not None:
            net.set_link_up(spec.cut_path, True)
            time.sleep(0.3)
    lines = [line for line in (first + out.decode(errors="replace")).splitlines() if line.startswith("{")]
    if client.returncode != 0 or not lines:
        said = err.decode(errors="replace")[-300:]
        raise RunFailed(f"proxy: the client exited {client.returncode}: {said}")
    record = json.loads(lines[-1])
    if spec.cut_path:
        record["cut"] = cut_time is not None
        record["stall_after_cut_s"] = stall_after(record, cut_time) if cut_time is not None else None
    return record


def run_class(record: dict[str, Any]) -> str:
    """A run's outcome in the matrix's vocabulary (testbed.outcome), with the subflow count on
    `mptcp`: reset (the transfer failed or was not intact), fallback-syn (the client's
    connection was plain TCP, as it is without a proxy), mptcp/N."""
    if record.get("error") or not record.get("intact"):
        return "reset"
    if not record.get("mptcp"):
        return "fallback-syn"
    return f"mptcp/{record.get('subflows', 1)}"


def short_circuit_counts(counters: dict[str, dict[str, int]], spec: ProxySpec, said: dict[str, Any],
                         records: list[dict[str, Any]]) -> dict[str, Any]:
    """What the announcement of the server's address did: did the client join it, did the
    server take the join, and how much of the data still crossed the relay. A python client's
    counters are its stack's (named like the kernel's, without the MPTcpExt prefix)."""
    client, server = counters.get("client", {}), counters.get(spec.server, {})
    if spec.client_stack == "python":
        client = Counter()
        for record in records:
            client.update({f"MPTcpExt{k}": v for k, v in record.get("stack_counters", {}).items()})
    relayed = int(said.get("bytes_to_server", 0))
    runs = spec.repeats
    sent = runs * (spec.byte_count if spec.mode == "bulk" else spec.size * spec.exchanges)
    return {
        "add_addr_received_by_client": client.get("MPTcpExtAddAddr", 0),
        "client_join_syns": client.get("MPTcpExtMPJoinSynTx", 0),
        "joins_received_by_server": server.get("MPTcpExtMPJoinSynRx", 0),
        "joins_refused_by_server": server.get("MPTcpExtMPJoinNoTokenFound", 0),
        "joins_established_at_server": server.get("MPTcpExtMPJoinAckRx", 0),
        "proxy_share_of_client_bytes": round(min(relayed, sent) / sent, 4) if sent else None,
    }


def _median(records: list[dict[str, Any]], key: str) -> float | None:
    values = [float(r[key]) for r in records if r.get(key) is not None and r.get("intact")]
    return round(statistics.median(values), 4) if values else None


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "runs": len(records),
        "outcome_classes": dict(sorted(Counter(run_class(r) for r in records).items())),
        "intact": sum(1 for r in records if r.get("intact")),
        "errors": [r["error"] for r in records if r.get("error")],
        "mptcp": sum(1 for r in records if r.get("mptcp")),
        "subflows": [r.get("subflows") for r in records],
        "both_paths": sum(1 for r in records if len(set(r.get("subflow_sources") or [])) >= 2),
        "median_goodput_mbit": _median(records, "goodput_mbit"),
        "median_duration_s": _median(records, "duration_s"),
        "median_rtt_us": _median(records, "rtt_median_us"),
        "median_stall_after_cut_s": _median(records, "stall_after_cut_s"),
    }


def run_proxy(spec: ProxySpec, topo: Topology, out_dir: Path) -> dict[str, Any]:
    """Build, run the spec's repeats, tear down; return (and write) the result."""
    from testbed.net.build import Network
    from testbed.net.state import RunState
    from testbed.runner import detect_backends, sigterm_as_interrupt

    backends_found = detect_backends()
    out_dir.mkdir(parents=True, exist_ok=True)
    state = RunState.create()
    work_dir = Path(state.work_dir)
    server_address = topo.host_addresses(spec.server)[0].split("/")[0]
    bind = topo.links["a"].address_of("client")
    started = time.time()
    processes: dict[str, subprocess.Popen] = {}
    records: list[dict[str, Any]] = []
    said: dict[str, Any] = {}
    try:
        with sigterm_as_interrupt(), Network(topo, backends_found, state) as net:
            _configure(net, spec, topo, server_address)
            ports = [] if spec.client_stack == "python" else ["--port", str(spec.port)]
            if spec.short_circuit_port is not None:
                ports += ["--port", str(spec.short_circuit_port), "--mptcp"]
            if ports:  # (the python client's runs start the kernel endpoint as the server on spec.port)
                processes["server"] = net.popen(spec.server, [
                    sys.executable, "-m", "testbed.proxy.endpoints", "server", *ports,
                    "--ready", str(work_dir / "server.ready")],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                _wait_ready(processes["server"], work_dir / "server.ready", f"the server on {spec.server}")
            if spec.variant == "kernel":
                intercept.install(net.netns(spec.node), server_address, spec.port)
                processes["relay"] = net.popen(spec.node, [
                    sys.executable, "-m", "testbed.proxy.relay_kernel", "--port", str(spec.port),
                    "--ready", str(work_dir / "relay.ready")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                _wait_ready(processes["relay"], work_dir / "relay.ready", f"the kernel relay on {spec.node}")
            elif spec.variant == "python":
                processes["relay"] = net.popen(spec.node, [
                    sys.executable, "-m", "testbed.proxy.relay_stack", "--server", server_address,
                    "--port", str(spec.port), "--ready", str(work_dir / "relay.ready"),
                    *([] if spec.short_circuit_port is None
                      else ["--announce-port", str(spec.short_circuit_port)])],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                _wait_ready(processes["relay"], work_dir / "relay.ready",
                            f"the python-stack relay on {spec.node}")
            nodes = ["client", spec.node, spec.server]
            before = {n: kernel_mptcp.read_counters(net.node_pid(n)) for n in nodes}
            for index in range(spec.repeats):
                if spec.client_stack == "python":
                    record = stack_client.one_run(net, spec, server_address, topo.host_addresses("client"),
                                                  spec.seed + index)
                else:
                    command = _client_command(spec, server_address, bind, spec.seed + index)
                    record = _one_run(net, spec, command)
                records.append({"index": index, **record})
            after = {n: kernel_mptcp.read_counters(net.node_pid(n)) for n in nodes}
            for name in list(processes):
                for line in stop_process(processes.pop(name)).splitlines():
                    if line.startswith("{"):
                        said.update(json.loads(line))
    finally:
        for process in processes.values():
            stop_process(process)
        state.remove()
    counters = {n: kernel_mptcp.counter_deltas(before[n], after[n]) for n in before}
    summary = summarize(records)
    if spec.short_circuit_port is not None:
        summary["short_circuit"] = short_circuit_counts(counters, spec, said, records)
    result = {
        "schema": SCHEMA_VERSION,
        "kind": "proxy",
        "spec": asdict(spec),
        "topology": topo.describe(),
        "started": started,
        "load_average": Path("/proc/loadavg").read_text().split()[:3],
        "summary": summary,
        "relay": said.get("relay") and {k: v for k, v in said.items() if k != "server"},
        "server": said.get("server"),
        "counters": counters,
        "runs": records,
    }
    (out_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _number(value: object, unit: str) -> str:
    return "-" if value is None else f"{value}{unit}"


def format_result(result: dict[str, Any]) -> str:
    spec, summary = result["spec"], result["summary"]
    what = (f"{spec['byte_count']} bytes" if spec["mode"] == "bulk"
            else f"{spec['exchanges']} exchanges of {spec['size']} bytes")
    cut = f", path {spec['cut_path']} cut at {spec['cut_at_s']} s" if spec["cut_path"] else ""
    lines = [
        f"{spec['name']}: {spec['client_stack']} client, proxy {spec['variant']} on {spec['node']}, "
        f"{spec['mode']} {what}{cut}, "
        f"{summary['runs']} runs",
        f"  outcome classes: {' · '.join(f'{k} {n}' for k, n in summary['outcome_classes'].items())}",
        f"  intact {summary['intact']}/{summary['runs']}  MPTCP {summary['mptcp']}/{summary['runs']}  "
        f"over both paths {summary['both_paths']}/{summary['runs']}  subflows {summary['subflows']}",
    ]
    if spec["mode"] == "bulk":
        lines.append(f"  median goodput {_number(summary['median_goodput_mbit'], ' Mbit/s')}  "
                     f"median duration {_number(summary['median_duration_s'], ' s')}")
    else:
        lines.append(f"  median request/response time {_number(summary['median_rtt_us'], ' µs')}")
    if spec["cut_path"]:
        lines.append(f"  median stall after the cut {_number(summary['median_stall_after_cut_s'], ' s')}")
    for error in summary["errors"]:
        lines.append(f"  error: {error}")
    short = summary.get("short_circuit")
    if short:
        lines.append(f"  short-circuit: ADD_ADDR received {short['add_addr_received_by_client']}, "
                     f"client join SYNs {short['client_join_syns']}, "
                     f"joins at the server {short['joins_received_by_server']} "
                     f"(refused, no token: {short['joins_refused_by_server']}; established "
                     f"{short['joins_established_at_server']}), proxy's share of the bytes "
                     f"{short['proxy_share_of_client_bytes']}")
    if result.get("relay"):
        relay = result["relay"]
        lines.append(f"  relay: {relay['connections']} connections, {relay['relayed']} relayed, "
                     f"{relay['errors']} errors, {relay['bytes_to_server']} bytes to the server")
    return "\n".join(lines)


def format_table(results: list[dict[str, Any]]) -> str:
    rows = [("spec", "client-proxy", "mode", "outcome classes", "intact", "goodput Mbit/s", "rtt µs",
             "stall s")]
    for result in results:
        spec, summary = result["spec"], result["summary"]
        classes = " · ".join(f"{name} {count}" for name, count in summary["outcome_classes"].items())
        rows.append((spec["name"], f"{spec['client_stack']}-{spec['variant']}", spec["mode"], classes,
                     f"{summary['intact']}/{summary['runs']}",
                     _number(summary["median_goodput_mbit"], ""), _number(summary["median_rtt_us"], ""),
                     _number(summary["median_stall_after_cut_s"], "")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)
