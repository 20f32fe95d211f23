"""Balancer runs with the python stack at either end (`[client] stack = "python"`,
`[balancer] backend_stack = "python"`).

The balancer's own programs (endpoints.py) speak a short protocol of their own over kernel
sockets. With the python stack at either end, both ends run the testbed's endpoint programs
instead (testbed.endpoints.kernel for a kernel side, testbed.endpoints.stack_endpoint for the
python stack), which carry the seeded payload and report every connection: bytes, SHA-256,
subflows, and the python stack's own counters. Each backend serves up to every connection of
the run; each connection is one client run with its own seed; a connection's backend is the
one whose report has its SHA-256.

A python backend owns the VIP (on its loopback, as for the kernel backends) and its own
address. With remedy "cflag" it sets the C flag (`allow_join_initial_addr_port = false`) and
announces its own address, as the kernel backends do with the sysctl and a `signal` endpoint.
A python client opens joins from its second address (the stack's fullmesh path manager), as
the kernel client's `subflow` endpoint does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from typing import Any

from testbed.command import stop_process
from testbed.endpoints.report import EndpointReport, ReportError, parse_output
from testbed.errors import EnvironmentProblem, RunFailed

MODULES = {"kernel": "testbed.endpoints.kernel", "python": "testbed.endpoints.stack_endpoint"}
IO_TIMEOUT_S = 20
CLIENT_TIMEOUT_S = 60.0


def server_command(spec: Any, vip: str, unicast: str) -> list[str]:
    command = [sys.executable, "-m", MODULES[spec.backend_stack], "server", "--mptcp",
               "--listen", f"0.0.0.0:{spec.port}", "--connections", str(spec.connections),
               "--timeout", str(IO_TIMEOUT_S)]
    if spec.backend_stack == "python":  # no path manager's own announcements: only the remedy's
        command += ["--local", vip, "--local", unicast, "--path-manager", "none"]
        if spec.remedy == "cflag":
            command += ["--stack-config", json.dumps({"allow_join_initial_addr_port": False}),
                        "--announce", unicast]
    return command


def client_command(spec: Any, vip: str, addresses: list[str], seed: int) -> list[str]:
    command = [sys.executable, "-m", MODULES[spec.client_stack], "client", "--mptcp",
               "--connect", f"{vip}:{spec.port}", "--bytes", str(spec.byte_count), "--seed", str(seed),
               "--timeout", str(IO_TIMEOUT_S)]
    if spec.client_stack == "python":
        command += [arg for address in addresses[:2] for arg in ("--local", address)]
    return command


def start_servers(net: Any, spec: Any, names: list[str], vip: str,
                  unicasts: dict[str, str]) -> dict[str, subprocess.Popen]:
    """Every backend's endpoint program, each once it says it listens."""
    servers: dict[str, subprocess.Popen] = {}
    for name in names:
        servers[name] = net.popen(name, server_command(spec, vip, unicasts[name]),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for name, process in servers.items():
        assert process.stdout is not None
        line = process.stdout.readline().decode(errors="replace")
        if '"listening"' not in line:
            for other in servers.values():
                other.kill()
                other.communicate()
            said = process.stderr.read().decode(errors="replace")[-300:] if process.stderr else ""
            raise EnvironmentProblem(f"the {spec.backend_stack} server on {name} did not start: "
                                     f"{(line or said).strip()[:300]}")
    return servers


def _reports(output: str, what: str) -> list[EndpointReport]:
    try:
        return parse_output(output)[1]
    except ReportError as exc:
        raise RunFailed(f"lb: {what}: {exc}") from exc


def run_clients(net: Any, spec: Any, vip: str, addresses: list[str]) -> list[EndpointReport | str]:
    """One client run per connection, one after another: its report, or why there is none."""
    outcomes: list[EndpointReport | str] = []
    for index in range(spec.connections):
        client = net.popen("client", client_command(spec, vip, addresses, spec.seed + index),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = client.communicate(timeout=CLIENT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            client.kill()
            client.communicate()
            outcomes.append(f"the client did not finish in {CLIENT_TIMEOUT_S:.0f} s")
            continue
        reports = _reports(out.decode(errors="replace"), f"connection {index}'s client")
        outcomes.append(reports[-1] if reports else
                        f"the client printed no report: {err.decode(errors='replace')[-200:]}")
    return outcomes


def stop_servers(servers: dict[str, subprocess.Popen]) -> dict[str, list[EndpointReport]]:
    """Each backend's reports of the connections it served (those it never got say so too)."""
    served: dict[str, list[EndpointReport]] = {}
    for name, process in servers.items():
        served[name] = [r for r in _reports(stop_process(process, timeout_s=10), f"the server on {name}")
                        if r.error is None and r.bytes > 0]
    return served


def connection_records(spec: Any, outcomes: list[EndpointReport | str],
                       served: dict[str, list[EndpointReport]]) -> list[dict[str, Any]]:
    """Records in the balancer client's shape (endpoints.py), so `summarize` reads both."""
    backend_of = {report.sha256: name for name, reports in served.items() for report in reports}
    received = {report.sha256: report for reports in served.values() for report in reports}
    records = []
    for index, outcome in enumerate(outcomes):
        record: dict[str, Any] = {"seed": spec.seed + index}
        if isinstance(outcome, str):
            records.append({**record, "error": outcome, "intact": False})
            continue
        server = received.get(outcome.sha256)
        # a subflow counts once it carried data: a python client lists its refused join too
        carried = [s for s in outcome.subflows if s.bytes_acked or s.bytes_received]
        sources = [s.local.rsplit(":", 1)[0] for s in carried]
        record.update(
            backend=backend_of.get(outcome.sha256, "-"), mptcp=outcome.mptcp_used,
            bytes=server.bytes if server else 0, sha256=server.sha256 if server else None,
            intact=(outcome.error is None and server is not None and server.bytes == spec.byte_count
                    and outcome.bytes == spec.byte_count),
            subflows=max(1, len(carried)), subflow_sources=sources,
            duration_s=outcome.duration_s)
        if outcome.error is not None:
            record["error"] = outcome.error
        if outcome.stack_counters:
            record["stack_counters"] = {k: v for k, v in outcome.stack_counters.items() if v}
        records.append(record)
    return records


def python_client_counters(records: list[dict[str, Any]]) -> dict[str, int]:
    """The python client's stack counters over the run, named like the kernel's MPTcpExt ones
    (a join it tried is MPTcpExtMPJoinSynTx), for `summarize`."""
    total: Counter[str] = Counter()
    for record in records:
        total.update({f"MPTcpExt{k}": v for k, v in record.get("stack_counters", {}).items()})
    return dict(total)
