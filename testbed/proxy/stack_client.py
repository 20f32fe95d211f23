"""Proxy runs with the bundled python stack as the client (`[client] stack = "python"`).

The client is the stack's endpoint program (testbed.endpoints.stack_endpoint) with both client
addresses as its local ones (its fullmesh path manager opens a join from the second), and the
legacy server is the kernel endpoint program with `--tcp` (MPTCP is disabled in its namespace
anyway), one server per run. Both print their reports (testbed.endpoints.report); a run is
intact when both ends' byte counts and SHA-256 agree with the requested count. The record has
the fields experiment.py's summary reads, like the kernel client's.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from typing import Any

from testbed.endpoints.report import EndpointReport, ReportError, parse_output
from testbed.errors import EnvironmentProblem, RunFailed
from testbed.proxy.spec import ProxySpec

RUN_TIMEOUT_S = 120.0
IO_TIMEOUT_S = 20
CONNECT_WAIT_S = 15.0


def server_command(spec: ProxySpec) -> list[str]:
    transport = "--mptcp" if spec.short_circuit_port is not None else "--tcp"
    return [sys.executable, "-m", "testbed.endpoints.kernel", "server", "--listen", f"0.0.0.0:{spec.port}",
            transport, "--connections", "1", "--timeout", str(IO_TIMEOUT_S)]


def client_command(spec: ProxySpec, server_address: str, addresses: list[str], seed: int) -> list[str]:
    command = [sys.executable, "-m", "testbed.endpoints.stack_endpoint", "client",
               "--connect", f"{server_address}:{spec.port}", "--seed", str(seed),
               "--timeout", str(IO_TIMEOUT_S)]
    if spec.variant == "none":
        command += ["--tcp", "--local", addresses[0]]
    else:
        command += ["--mptcp", *[arg for address in addresses for arg in ("--local", address)]]
    if spec.mode == "bulk":
        command += ["--bytes", str(spec.byte_count)]
    else:
        command += ["--requests", str(spec.exchanges), "--request-bytes", str(spec.size),
                    "--response-bytes", str(spec.size)]
    return command


def wait_for_server_connection(pid: int, port: int, client: subprocess.Popen) -> float:
    """When a TCP connection to `port` became ESTABLISHED in the namespace of process `pid`
    (read from its /proc/<pid>/net/tcp, polled every 10 ms), or now once the client has
    exited or after CONNECT_WAIT_S."""
    deadline = time.monotonic() + CONNECT_WAIT_S
    local_port = f":{port:04X}"
    while time.monotonic() < deadline and client.poll() is None:
        with open(f"/proc/{pid}/net/tcp") as table:
            for line in table.readlines()[1:]:
                fields = line.split()
                if fields[1].endswith(local_port) and fields[3] == "01":
                    return time.monotonic()
        time.sleep(0.01)
    return time.monotonic()


def _report(output: str, role: str) -> EndpointReport:
    try:
        _listening, reports = parse_output(output)
    except ReportError as exc:
        raise RunFailed(f"proxy: the python client run's {role} report: {exc}") from exc
    if not reports:
        raise RunFailed(f"proxy: the python client run's {role} printed no report")
    return reports[-1]


def record_of(spec: ProxySpec, client: EndpointReport, server: EndpointReport) -> dict[str, Any]:
    """The run's record in the kernel client's shape, from both ends' reports."""
    expected = spec.byte_count if spec.mode == "bulk" else None
    intact = (client.error is None and server.error is None and client.bytes == server.bytes
              and client.sha256 == server.sha256 and (expected is None or server.bytes == expected))
    sources = [s.local.rsplit(":", 1)[0] for s in client.subflows if s.bytes_acked or s.bytes_received]
    record: dict[str, Any] = {
        "mode": spec.mode, "client_stack": "python", "intact": intact, "bytes": server.bytes,
        "sha256": server.sha256, "duration_s": client.duration_s, "mptcp": client.mptcp_used,
        "subflows": max(1, len(client.subflows)), "subflow_sources": sources,
        "stack_counters": {k: v for k, v in (client.stack_counters or {}).items() if v},
    }
    if spec.mode == "bulk" and intact:
        record["goodput_mbit"] = round(client.goodput_mbps, 2)
    if spec.mode == "echo" and intact and client.latencies_ms:
        record["rtt_median_us"] = round(statistics.median(client.latencies_ms) * 1000, 1)
    errors = [f"{r.role}: {r.error}" for r in (client, server) if r.error]
    if errors:
        record["error"] = "; ".join(errors)
    return record


def one_run(net: Any, spec: ProxySpec, server_address: str, addresses: list[str],
            seed: int) -> dict[str, Any]:
    """Start the server, run the client (cutting a path when the spec says), pair the reports."""
    server = net.popen(spec.server, server_command(spec), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert server.stdout is not None
    line = server.stdout.readline().decode(errors="replace")
    if '"listening"' not in line:
        server.kill()
        raise EnvironmentProblem(f"the legacy server on {spec.server} did not start: {line.strip()[:200]}")
    client = net.popen("client", client_command(spec, server_address, addresses, seed),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cut = False
    try:
        if spec.cut_path:
            # the stack client prints nothing before its report: the cut counts from the moment
            # the server has its TCP connection (the proxy dials it once the client's is up)
            started = wait_for_server_connection(net.node_pid(spec.server), spec.port, client)
            time.sleep(max(0.0, started + spec.cut_at_s - time.monotonic()))
            if client.poll() is None:
                net.set_link_up(spec.cut_path, False)
                cut = True
        client_out, client_err = client.communicate(timeout=RUN_TIMEOUT_S)
        server_out, _ = server.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        for process in (client, server):
            process.kill()
            process.communicate()
        raise RunFailed(f"proxy: the python client run did not finish in {RUN_TIMEOUT_S:.0f} s") from exc
    finally:
        if cut:
            net.set_link_up(spec.cut_path, True)
            time.sleep(0.3)
    if not client_out.strip():
        said = client_err.decode(errors="replace")[-300:]
        raise RunFailed(f"proxy: the python client printed nothing: {said}")
    record = record_of(spec, _report(client_out.decode(errors="replace"), "client"),
                       _report(line + server_out.decode(errors="replace"), "server"))
    if spec.cut_path:
        record["cut"] = cut
    return record
