"""Real-namespace harness: two_path built once, endpoints of either stack started in its
hosts, kernel counters read around each run, the client host's traffic captured and judged
by tshark.

`Bed.run(client, server)` starts the server endpoint, waits for its listening line, starts
the client, runs optional timed `during` callbacks, and returns a `Run` with both reports,
the kernel counter deltas of both hosts and the capture's tshark verdict.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from testbed import kernel_mptcp
from testbed.command import run_command
from testbed.endpoints import ENDPOINT_MODULES
from testbed.endpoints.report import EndpointReport, parse_output
from testbed.net.build import Network
from testbed.net.state import RunState
from testbed.runner import detect_backends
from testbed.wire.tshark import EXPERT_SEVERITY_WARN, JUDGE_PREFERENCES, dissect_fields, problems
from topologies import build_topology

REPO = Path(__file__).resolve().parents[3]
PYTHON = sys.executable
SERVER = "10.0.100.2"
SERVER_2 = "10.0.100.3"  # a second server address for ADD_ADDR scenarios
CLIENT_A, CLIENT_B = "10.0.1.1", "10.0.2.1"
PORT = 5201
RECOVERY_FLAGS = ("tcp.analysis.retransmission", "tcp.analysis.fast_retransmission",
                  "tcp.analysis.spurious_retransmission", "tcp.analysis.out_of_order",
                  "tcp.analysis.lost_segment", "tcp.analysis.duplicate_ack", "tcp.analysis.flags")
MAPPING_PREFERENCES = {**JUDGE_PREFERENCES, "mptcp.analyze_mappings": "TRUE",
                       # the mapping analysis misplaces segments after a capture gap with
                       # absolute sequence numbers; tshark's defaults (relative) do not
                       "tcp.relative_sequence_numbers": "TRUE", "mptcp.relative_sequence_numbers": "TRUE"}


def available() -> bool:
    return os.geteuid() == 0 and all(shutil.which(tool) for tool in ("tshark", "tcpdump", "nft", "mnexec"))


@dataclass(frozen=True)
class Endpoint:
    """One endpoint program: stack "kernel" or "python", and its extra arguments."""

    stack: str
    args: tuple[str, ...] = ()

    def command(self, role: str, base: list[str]) -> list[str]:
        return [PYTHON, "-m", ENDPOINT_MODULES[self.stack], role, *base, *self.args]


@dataclass
class WireVerdict:
    packets: int
    mptcp_packets: int
    errors: list[str]  # malformed packets and expert items of severity error
    mapping_warnings: int  # expert warnings of the MPTCP mapping analysis
    warning_messages: dict[str, int]
    # the same, on packets tshark does not see as loss recovery (retransmission, out of
    # order, after a gap): tshark's mapping analysis cannot place re-sent ranges, so those
    # warnings measure the loss rate, not the mappings
    clean_mapping_warnings: int = 0
    # of those, the ones on segments carrying payload (tshark also warns on zero-length
    # ACK/FIN segments whose sequence number lies past the last mapping, kernel or not)
    data_mapping_warnings: int = 0


@dataclass
class Run:
    client: EndpointReport
    server: EndpointReport
    client_counters: dict[str, int]
    server_counters: dict[str, int]
    wire: WireVerdict | None
    client_stderr: str
    server_stderr: str
    timeseries: dict[str, Path] = field(default_factory=dict)

    def kernel(self, side: str, name: str) -> int:
        counters = self.client_counters if side == "client" else self.server_counters
        return counters.get(f"MPTcpExt{name}", 0)


def _payload_blind_profile(workdir: Path) -> Path:
    """A tshark profile with Thrift off: its heuristic claims random payload bytes on any
    port and reports expert errors about them, which say nothing about TCP or MPTCP."""
    profile = workdir / "wireshark-profile"
    profile.mkdir(exist_ok=True)
    (profile / "disabled_protos").write_text("thrift\n")
    return profile


def judge_capture(pcap: Path) -> WireVerdict:
    """tshark's verdict on a capture: errors, and the mapping analysis's warnings."""
    os.environ["WIRESHARK_CONFIG_DIR"] = str(_payload_blind_profile(pcap.parent))
    # only the fields judged below: the whole tree as JSON took 30 s on a 2 s transfer's capture
    fields = ["tcp.options.mptcp.subtype", "_ws.malformed", "_ws.expert.severity",
              "_ws.expert.message", "tcp.len", *RECOVERY_FLAGS]
    packets = dissect_fields(pcap, fields, MAPPING_PREFERENCES, timeout_s=120)
    errors: list[str] = []
    warnings: dict[str, int] = {}
    mptcp = 0
    clean = 0
    data = 0
    for number, packet in enumerate(packets, start=1):
        if "tcp.options.mptcp.subtype" in packet:
            mptcp += 1
        errors += [f"#{number}: {p}" for p in problems(packet)]
        severities = packet.get("_ws.expert.severity", [])
        messages = packet.get("_ws.expert.message", [])
        for index, severity in enumerate(severities):
            message = messages[index] if index < len(messages) else ""
            is_mptcp = "mapping" in message.lower()
            if int(severity) == EXPERT_SEVERITY_WARN and is_mptcp:
                warnings[message] = warnings.get(message, 0) + 1
                if not any(flag in packet for flag in RECOVERY_FLAGS):
                    clean += 1
                    if packet.get("tcp.len", ["0"])[0] != "0":
                        data += 1
    return WireVerdict(len(packets), mptcp, errors, sum(warnings.values()), warnings, clean, data)


class Bed:
    """two_path, built once; kernel MPTCP reconfigured per run."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.state = RunState.create()
        self.net = Network(build_topology("two_path", {"rate_mbit": 100.0}), detect_backends(), self.state)
        self.runs = 0

    def __enter__(self) -> Bed:
        self.net.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.net.__exit__(*exc)
        finally:
            self.state.remove()

    def netns(self, node: str) -> str:
        return self.net.netns(node)

    def sh(self, node: str, *command: str) -> str:
        return run_command(command, netns=self.netns(node), what=f"{command} in {node}").stdout

    def kernel_mptcp(self, node: str, *, checksum: bool = False, subflow: tuple[tuple[str, str], ...] = (),
                     signal_: tuple[tuple[str, str], ...] = (), enabled: bool = True) -> None:
        if not enabled:
            kernel_mptcp.disable(self.netns(node))
            return
        kernel_mptcp.configure(self.netns(node), subflows=4, add_addr_accepted=4, checksum=checksum,
                               subflow_endpoints=subflow, signal_endpoints=signal_)

    def reset(self) -> None:
        """Every run starts from kernel MPTCP on, no checksum, no endpoints, all links up."""
        for node in ("client", "server"):
            self.kernel_mptcp(node)
        for link in ("a", "b"):
            if not self.net.link_up[link]:
                self.net.set_link_up(link, True)

    def _popen(self, node: str, command: list[str]) -> subprocess.Popen:
        return self.net.popen(node, command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=str(REPO))

    def run(self, client: Endpoint, server: Endpoint, *, transfer: tuple[str, ...] = ("--bytes", "4000000"),
            during: list[tuple[float, Callable[[Bed, subprocess.Popen, subprocess.Popen], None]]] = (),  # type: ignore[assignment]
            capture: bool = True, timeout_s: float = 40.0) -> Run:
        self.runs += 1
        tag = f"run{self.runs}"
        series = {"client": self.workdir / f"{tag}-client.csv", "server": self.workdir / f"{tag}-server.csv"}
        pcap = self.workdir / f"{tag}.pcap"
        tcpdump = None
        if capture:
            tcpdump = self._popen("client", ["tcpdump", "-i", "any", "-n", "-s", "0", "-U", "-w", str(pcap),
                                             "tcp portrange 5201-5202"])
            deadline = time.monotonic() + 5
            while not pcap.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.2)
        before = {node: kernel_mptcp.read_counters(self.net.node_pid(node)) for node in ("client", "server")}
        server_proc = self._popen("server", server.command("server", [
            "--listen", f"0.0.0.0:{PORT}" if server.stack == "kernel" else f"{SERVER}:{PORT}",
            "--timeout", "10", "--sample-ms", "20", "--timeseries", str(series["server"])]))
        assert server_proc.stdout is not None
        listening = server_proc.stdout.readline()
        if '"listening"' not in listening:
            server_proc.kill()
            raise AssertionError(f"server did not listen: {listening!r} {server_proc.stderr.read()}")  # type: ignore[union-attr]
        client_proc = self._popen("client", client.command("client", [
            "--connect", f"{SERVER}:{PORT}", "--timeout", "10", "--sample-ms", "20",
            "--timeseries", str(series["client"]), *transfer]))
        started = time.monotonic()
        timers = []
        for delay, action in during:
            timer = threading.Timer(delay, action, args=(self, client_proc, server_proc))
            timer.start()
            timers.append(timer)
        try:
            client_out, client_err = client_proc.communicate(timeout=timeout_s)
            remaining = max(5.0, timeout_s - (time.monotonic() - started))
            server_out, server_err = server_proc.communicate(timeout=remaining)
        finally:
            for timer in timers:
                timer.cancel()
            for proc in (client_proc, server_proc):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        after = {node: kernel_mptcp.read_counters(self.net.node_pid(node)) for node in ("client", "server")}
        verdict = None
        if tcpdump is not None:
            time.sleep(0.3)
            tcpdump.send_signal(signal.SIGINT)
            tcpdump.communicate(timeout=10)
            verdict = judge_capture(pcap)
        _, client_reports = parse_output(client_out)
        _, server_reports = parse_output(server_out)
        assert client_reports, f"no client report; stderr: {client_err[-2000:]}"
        assert server_reports, f"no server report; stderr: {server_err[-2000:]}"
        return Run(client_reports[-1], server_reports[-1],
                   kernel_mptcp.counter_deltas(before["client"], after["client"]),
                   kernel_mptcp.counter_deltas(before["server"], after["server"]),
                   verdict, client_err, server_err, series)


def sigterm(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)


def data_subflows(report: EndpointReport, min_bytes: int = 100_000) -> list[str]:
    """Local addresses of the subflows that carried at least `min_bytes` either way."""
    return [s.local for s in report.subflows if max(s.bytes_acked, s.bytes_received) >= min_bytes]


def describe(run: Run) -> str:
    return json.dumps({"client": run.client.to_dict(), "server": run.server.to_dict(),
                       "client_counters": run.client_counters, "server_counters": run.server_counters,
                       "client_stderr": run.client_stderr[-1500:],
                       "server_stderr": run.server_stderr[-1500:]},
                      default=str)[:6000]
