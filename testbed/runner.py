"""`testbed run` as a pipeline: plan -> network -> endpoints -> collect -> Result.

`plan_run(spec)` decides everything that needs no network (topology, backends, bumps, addresses,
endpoint commands and seeds); `Network(...)` builds it and always tears it down;
`run_endpoints` configures the hosts' MPTCP, starts server then client, applies the timeline
and returns what the endpoints printed and how they exited; `collect` turns that into a typed
`Result` (testbed.result), written as result.json. The runner owns the order of things and
nothing else. Whatever happens (an error, Ctrl-C, SIGTERM), teardown runs and the run's state
file is removed; after `kill -9`, `testbed clean` finds the same resources from it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import json
import os
import platform
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from testbed import kernel_mptcp, kernels
from testbed.doctor import run_doctor
from testbed.endpoint_commands import (
    command_problem,
    endpoint_command,
    received_file_of,
    vm_endpoint_command,
)
from testbed.endpoints import ENDPOINT_MODULES
from testbed.endpoints.report import ReportError, merge_reports, parse_output
from testbed.endpoints.vm_guest import GO_FILE, READY_FILE
from testbed.errors import EnvironmentProblem, RunFailed, SpecError
from testbed.integrity_run import run_verdict
from testbed.interrupts import forks_hold_interrupts, lost_interrupts_kept, raise_lost_interrupt
from testbed.latency_result import (
    LATENCY_FILE,
    is_request_response,
    latency_fields,
    with_request_stream,
    write_latency_csv,
)
from testbed.net.build import BumpRuntime, Network, delay_bump
from testbed.net.capture import CAPTURE_LOG, CAPTURE_PCAP, start_capture, stop_capture
from testbed.net.families import check_families
from testbed.net.shaping import Backends
from testbed.net.state import RunState, new_run_id, work_dir_of
from testbed.net.topo import Topology, family_label, host_port, ip_version
from testbed.outcome import classify
from testbed.progress import TransferProgress
from testbed.result import RESULT_FILE, ConnectionResult, EndpointRecord, Result, SubflowResult
from testbed.results import (
    BIN_S,
    TIMESERIES_FILE,
    bin_samples,
    timeseries_meta,
    write_json_atomic,
    write_timeseries,
)
from testbed.sim.rng import derive_seed
from testbed.spec import EndpointSpec, ExperimentSpec, TimelineEvent, check_against_topology
from topologies import build_topology

Progress = Callable[[str], None]
# called about every 50 ms while the client runs: (the run's work directory, seconds since the
# client started); lets a caller follow <work_dir>/client.samples.csv live (the Prague demo graph)
Observer = Callable[[Path, float], None]
ROLES = ("client", "server")


_DETECTED: list[Backends | None] = []  # a frame per active backends_detected_once()


def detect_backends() -> Backends:
    if _DETECTED and _DETECTED[-1] is not None:
        return _DETECTED[-1]
    report = run_doctor()
    if report.problems or report.backends is None:
        problems = "; ".join(f"{c.name}: {c.detail}" for c in report.problems)
        raise EnvironmentProblem(f"this machine cannot run experiments ({problems}); see `testbed doctor`")
    if _DETECTED:
        _DETECTED[-1] = report.backends
    return report.backends


@contextlib.contextmanager
def backends_detected_once() -> Iterator[None]:
    """Runs in a row (a matrix's cells) probe the machine's backends once, for the first run,
    not per run (the doctor's namespace probe is about 0.35 s)."""
    _DETECTED.append(None)
    try:
        yield
    finally:
        _DETECTED.pop()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM ends a run like Ctrl-C does: through the same teardown. Either one, should
    Python drop its KeyboardInterrupt in a finalizer, is raised by the client's wait loop.

    pyroute2 forks helper processes to enter namespaces; a fork inherits this handler and must
    not unwind into the runner's teardown, so anything but the owner just exits.
    """
    owner = os.getpid()

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != owner:
            os._exit(128 + signum)
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        with forks_hold_interrupts(), lost_interrupts_kept():
            yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def plan_bumps(spec: ExperimentSpec, topo: Topology, backends: Backends) -> dict[str, BumpRuntime]:
    """Which bumps run the inline process: those with middleboxes, and, without netem, those
    carrying a link's userspace delay stage (a link with delay now or later in the timeline)."""
    bumps: dict[str, BumpRuntime] = {}
    switched = {ev.middlebox for ev in spec.timeline if ev.middlebox}
    for box in spec.middleboxes:
        runtime = bumps.setdefault(box.node, BumpRuntime(seed=spec.seed))
        entry: dict[str, Any] = {"name": box.type, "params": box.params}
        if f"{box.node}.{len(runtime.middleboxes)}" in switched:
            entry["switchable"] = True  # behind its trigger gate, for set_middlebox_active
        runtime.middleboxes.append(entry)
    if backends.netem:
        return bumps
    delayed = {name for name, link in topo.links.items()
               if link.params.delay_ms > 0 or link.params.jitter_ms > 0}
    delayed |= {ev.link for ev in spec.timeline if "delay_ms" in ev.set or "jitter_ms" in ev.set}
    for name in sorted(delayed):
        link = topo.links[name]
        bump = delay_bump(link)
        if bump is None:
            raise SpecError(f"link {name} needs a userspace delay stage (this kernel has no netem) but has "
                            "no middlebox node to run it in; use a link with a middlebox node")
        runtime = bumps.setdefault(bump, BumpRuntime(seed=spec.seed))
        runtime.delay_ms = link.params.delay_ms
        runtime.jitter_ms = link.params.jitter_ms
    return bumps


def environment(backends: Backends) -> dict[str, Any]:
    return {
        "kernel": platform.release(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "backends": backends.as_dict(),
        "hostname": platform.node(),
    }


def endpoint_seed(run_seed: int, role: str) -> int:
    """The seed of a python endpoint's stack RNG (keys, nonces, ISNs): derived from the spec's
    seed and the role, so client and server draw different streams and a seed replays both."""
    return derive_seed(run_seed, f"endpoint/{role}")


@dataclass(frozen=True)
class EndpointPlan:
    """One endpoint program: where it runs and exactly what it is started with."""

    role: str
    stack: str
    host: str
    addresses: list[tuple[str, str]]  # (address, device) of its host, in interface order
    command: list[str]
    record: EndpointRecord  # the seeds it runs with (exit_code filled in at the end)
    vm_state: Path | None = None  # a VM endpoint's state directory (testbed.endpoints.vm_kernel)


@dataclass(frozen=True)
class RunPlan:
    """Everything decided before the network exists (stage 1 of the pipeline)."""

    spec: ExperimentSpec
    topo: Topology
    backends: Backends
    bumps: dict[str, BumpRuntime]
    shaped_links: set[str]
    listen: str
    client: EndpointPlan
    server: EndpointPlan

    @property
    def endpoints(self) -> tuple[EndpointPlan, EndpointPlan]:
        return self.client, self.server


def _addresses(topo: Topology, host: str) -> list[tuple[str, str]]:
    """(address, device) of a host in interface order, the first address of the topology's
    initial family first: the client binds it, the others become its subflow endpoints."""
    addresses = [(address.split("/")[0], iface.name)
                 for _link, iface, _peer in topo.l3_interfaces(host) for address in iface.addresses]
    first = next((a for a in addresses if ip_version(a[0]) == topo.initial_version), None)
    return [first, *(a for a in addresses if a != first)] if first else addresses


def socket_address(topo: Topology, address: str) -> str:
    """An address as a kernel endpoint's socket takes it: in a topology carrying IPv6 every
    socket is AF_INET6 (Linux joins subflows of the other family only to such a connection),
    so an IPv4 address is written IPv4-mapped (or under the topology's NAT64 prefix)."""
    if 6 not in topo.versions or ip_version(address) == 6:
        return address
    if topo.nat64_prefix is not None:  # the client reaches IPv4 through a NAT64 (RFC 6052)
        from middleboxes.nat64 import embed

        return embed(ipaddress.IPv6Network(topo.nat64_prefix), address)
    return f"::ffff:{address}"


def plan_run(spec: ExperimentSpec, work: Path, backends: Backends | None = None) -> RunPlan:
    """Check the spec against its topology and this machine, and decide every command."""
    for endpoint in spec.endpoints:
        if importlib.util.find_spec(ENDPOINT_MODULES[endpoint.stack]) is None:
            raise SpecError(f"{spec.source}: stack {endpoint.stack!r} endpoints are not available in this "
                            f"installation (no module {ENDPOINT_MODULES[endpoint.stack]})")
    topo = build_topology(spec.topology, spec.topology_params)
    check_against_topology(spec, topo)
    topo.finalize()
    backends = backends or detect_backends()
    check_families(spec, topo)
    server_addresses = _addresses(topo, spec.server.host)
    listen = host_port(socket_address(topo, server_addresses[0][0]), spec.traffic.port)
    # a dual-stack server takes both families (joins arrive at its other address)
    server_listen = listen if 6 not in topo.versions else host_port("::", spec.traffic.port)
    sender = "client" if spec.traffic.direction == "upload" else "server"
    endpoints = {}
    for role, endpoint in (("client", spec.client), ("server", spec.server)):
        addresses = _addresses(topo, endpoint.host)
        seed = endpoint_seed(spec.seed, role) if endpoint.stack == "python" else None
        release = None if endpoint.stack == "python" else platform.release()
        command = endpoint_command(role, endpoint.stack, spec,
                                   listen if role == "client" else server_listen,
                                   socket_address(topo, addresses[0][0]) if role == "client" else None,
                                   work / f"{role}.samples.csv", [a for a, _dev in addresses], seed)
        if endpoint.stack == "command":
            command += command_program_options(spec, topo, endpoint, role)
        vm_state = None
        if endpoint.kernel is not None:  # a missing kernel stops here, before anything is built
            release = kernels.find_fetched(endpoint.kernel, kernels.cache_dir()).release
            vm_state = work / f"{role}.vm"
            command = vm_endpoint_command(role, release, vm_state, work, command)
        record = EndpointRecord(stack=endpoint.label, seed=seed,
                                payload_seed=spec.seed if role == sender else None, exit_code=None,
                                kernel=release)
        endpoints[role] = EndpointPlan(role, endpoint.stack, endpoint.host, addresses, command, record,
                                       vm_state)
    shaped = {ev.link for ev in spec.timeline if ev.link}
    return RunPlan(spec, topo, backends, plan_bumps(spec, topo, backends), shaped,
                   listen, endpoints["client"], endpoints["server"])


def command_program_options(spec: ExperimentSpec, topo: Topology, endpoint: EndpointSpec,
                            role: str) -> list[str]:
    """A command endpoint's program line, filled in for this topology (--command, --ready); a
    placeholder the topology cannot fill or a program not on PATH is a SpecError."""
    from testbed.endpoints.command_template import (
        TemplateError,
        TemplateValues,
        fill_template,
        missing_program,
    )

    assert endpoint.command is not None
    values = TemplateValues(
        client_addresses=tuple(a for a, _dev in _addresses(topo, spec.client.host)),
        server_addresses=tuple(a for a, _dev in _addresses(topo, spec.server.host)),
        port=spec.traffic.port, bytes=spec.traffic.bytes, seconds=spec.traffic.seconds,
        timeout_s=spec.traffic.timeout_s, seed=spec.seed)
    where = f"{spec.source}: the {role}'s command"
    try:
        line = fill_template(endpoint.command, values)
    except TemplateError as exc:
        raise SpecError(f"{where}: {exc}") from None
    missing = missing_program(line)
    if missing is not None:
        raise SpecError(f"{where}: program {missing!r} not found on PATH (install it, e.g. with "
                        f"scripts/setup.sh, or give its full path)")
    server_options = ["--ready", endpoint.ready, "--done", endpoint.done] if role == "server" else []
    return ["--command", line, *server_options]


def read_vm_summary(endpoint: EndpointPlan) -> dict[str, Any] | None:
    """What a VM endpoint left in its state directory (None if it never got that far)."""
    if endpoint.vm_state is None:
        return None
    try:
        return json.loads((endpoint.vm_state / "vm.json").read_text())
    except (OSError, ValueError):
        return None


def _wait_for_vm_ready(proc: subprocess.Popen, endpoint: EndpointPlan, progress: Progress) -> None:
    """A VM client boots before the server starts: the guest configures its network and holds
    the endpoint program until GO_FILE appears (or the launcher gives up)."""
    assert endpoint.vm_state is not None
    progress(f"booting the {endpoint.role}'s VM (kernel {endpoint.record.kernel})")
    while proc.poll() is None and not (endpoint.vm_state / READY_FILE).exists():
        time.sleep(0.1)


def run_experiment(spec: ExperimentSpec, out_dir: Path, *, progress: Progress = print,
                   observer: Observer | None = None, eta: TextIO | None = None,
                   before_traffic: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run one experiment and write its result files into out_dir; returns result.json's document.

    `eta`: where to draw the transfer's progress bar with the time left (`testbed run` gives
    stderr); None draws nothing (a matrix has its own bar). `before_traffic` is called once the
    network is built, before anything of the run's traffic starts (a matrix finishes reading
    the cell before's capture there). Ctrl-C (or SIGTERM) during the
    transfer stops the client, which reports what got through: the result is still written,
    marked interrupted, and then KeyboardInterrupt propagates."""
    run_id = new_run_id()
    plan = plan_run(spec, work_dir_of(run_id))  # a bad spec stops here: nothing built, nothing recorded
    out_dir.mkdir(parents=True, exist_ok=True)
    with sigterm_as_interrupt():
        state = RunState.create(run_id)
        try:
            return _run(plan, state, out_dir, progress, observer, eta, before_traffic)
        finally:
            state.remove()


@dataclass
class EndpointOutput:
    """What an endpoint program printed and how it exited."""

    stdout: str
    stderr: str
    exit_code: int | None  # None: it had to be killed and reported nothing


@dataclass
class TransferRecord:
    """What the network stage hands to `collect`: endpoint outputs and everything read from the
    network before it was torn down."""

    client: EndpointOutput
    server: EndpointOutput
    interrupted: bool
    timeline: list[dict[str, Any]]
    congestion: dict[str, str]
    counters_before: dict[str, dict[str, int]]
    counters_after: dict[str, dict[str, int]]
    middlebox_stats: dict[str, Any]
    loss_counters: dict[str, Any]
    shaping: dict[str, Any]
    vm_summaries: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> vm.json


def _run(plan: RunPlan, state: RunState, out_dir: Path, progress: Progress,
         observer: Observer | None = None, eta: TextIO | None = None,
         before_traffic: Callable[[], None] | None = None) -> dict[str, Any]:
    work = Path(state.work_dir)
    backends = plan.backends
    progress(f"building {plan.topo.name} (run {state.run_id}, backends rate={backends.rate} "
             f"loss={backends.loss} delay={backends.delay})")
    with Network(plan.topo, backends, state, bumps=plan.bumps, shaped_links=plan.shaped_links) as net:
        if before_traffic is not None:
            before_traffic()
        transfer = run_endpoints(plan, net, work, progress, observer, eta)
        progress("tearing down the network")  # stage names a signal test waits for
    progress("writing the result")
    result = collect(plan, transfer, work, out_dir, timings=dict(net.timings),
                     teardown_problems=list(net.teardown_problems))
    write_json_atomic(out_dir / RESULT_FILE, result.to_json())
    if result.interrupted:
        connection = result.connection
        progress(f"interrupted: partial result in {out_dir / RESULT_FILE} "
                 f"({connection.bytes} bytes got through, outcome {connection.outcome})")
        raise KeyboardInterrupt("run interrupted; partial result written")
    return result.to_json()


def configure_hosts(plan: RunPlan, net: Network) -> dict[str, str]:
    """Kernel MPTCP limits, endpoints and sysctls of both hosts; returns each host's TCP
    congestion control."""
    spec = plan.spec
    client_subflows = plan.client.addresses[1:] if spec.mptcp.client_subflow_endpoints else []
    server_signals = [a for a in plan.server.addresses if a[0] in spec.mptcp.server_signal]
    for endpoint, subflow_eps, signal_eps in ((plan.client, client_subflows, []),
                                              (plan.server, [], server_signals)):
        ns = net.netns(endpoint.host)
        if spec.traffic.kernel_buffer_max_bytes is not None and endpoint.stack != "python":
            kernel_mptcp.set_buffer_max(ns, spec.traffic.kernel_buffer_max_bytes)
        receiving = (spec.traffic.direction == "upload") == (endpoint is plan.server)
        if receiving and spec.traffic.receiver_buffer_max_bytes is not None and endpoint.stack == "kernel":
            kernel_mptcp.set_receive_buffer_max(ns, spec.traffic.receiver_buffer_max_bytes)
        if not receiving and spec.traffic.sender_buffer_bytes is not None and endpoint.stack == "kernel":
            kernel_mptcp.set_send_buffer(ns, spec.traffic.sender_buffer_bytes)
        if spec.traffic.kernel_rto_max_ms is not None and endpoint.stack != "python":
            kernel_mptcp.set_rto_max(ns, spec.traffic.kernel_rto_max_ms)
        if spec.traffic.kernel_tcp_retries2 is not None and endpoint.stack != "python":
            kernel_mptcp.set_tcp_retries2(ns, spec.traffic.kernel_tcp_retries2)
        if endpoint.stack == "tcp":
            kernel_mptcp.disable(ns)
        else:
            kernel_mptcp.configure(ns, subflows=spec.mptcp.subflows,
                                   add_addr_accepted=spec.mptcp.add_addr_accepted,
                                   checksum=spec.mptcp.checksum, subflow_endpoints=tuple(subflow_eps),
                                   signal_endpoints=tuple(signal_eps),
                                   stale_loss_cnt=spec.mptcp.stale_loss_cnt,
                                   c_flag=spec.mptcp.server_c_flag and endpoint is plan.server)
    return {endpoint.host: kernel_mptcp.congestion_control(net.netns(endpoint.host),
                                                           spec.traffic.congestion_control)
            for endpoint in plan.endpoints}


def expected_carrying_subflows(spec: ExperimentSpec, client_addresses: list[tuple[str, str]]) -> int:
    """How many subflows should carry data: one per client interface, up to the spec's subflows,
    less those whose address the client marks backup (python stack_config.backup_addresses),
    which stay idle while another path works; so a clean backup subflow is not a rejected one."""
    interfaces = {device for _address, device in client_addresses}
    backups = set(spec.client.stack_config.get("backup_addresses", ()))
    backup_interfaces = {device for address, device in client_addresses if address in backups}
    usable = min(len(interfaces), spec.mptcp.subflows + 1)
    return max(1, usable - len(backup_interfaces))


def run_endpoints(plan: RunPlan, net: Network, work: Path, progress: Progress,
                  observer: Observer | None = None, eta: TextIO | None = None) -> TransferRecord:
    """Stage 3: configure the hosts, start the server then the client, apply the timeline while
    the client runs, and read everything the result needs before the network goes."""
    spec = plan.spec
    congestion = configure_hosts(plan, net)
    pids = {endpoint.host: net.node_pid(endpoint.host) for endpoint in plan.endpoints}
    before = {host: kernel_mptcp.read_counters(pid) for host, pid in pids.items()}
    capture = start_capture(net, plan.client.host, work) if spec.capture else None
    timeline_log: list[dict[str, Any]] = []

    client_proc = None
    if plan.client.vm_state is not None:  # boots before the server listens (its accept times out)
        client_proc = net.popen(plan.client.host, plan.client.command, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        _wait_for_vm_ready(client_proc, plan.client, progress)
    if plan.server.vm_state is not None:
        progress(f"booting the server's VM (kernel {plan.server.record.kernel})")
    server_proc = net.popen(plan.server.host, plan.server.command, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    first = server_proc.stdout.readline() if server_proc.stdout else ""
    if '"listening"' not in first:
        if client_proc is not None:
            client_proc.kill()
        problem = command_problem(first)
        if problem is not None:  # the user's program, not the testbed: bad input
            finish_endpoint(server_proc, grace_s=5)
            raise SpecError(problem)
        server_proc.kill()
        raise RunFailed(f"server endpoint did not start: {first.strip()} "
                        f"{server_proc.stderr.read().strip() if server_proc.stderr else ''}")
    progress(f"server listening on {plan.listen}; client {plan.client.stack} -> server {plan.server.stack}, "
             + (f"{spec.traffic.requests} requests" if spec.traffic.type == "request_response"
                else f"{spec.traffic.bytes} bytes" if spec.traffic.bytes else f"{spec.traffic.seconds} s"))
    started = time.monotonic()
    if client_proc is None:
        client_proc = net.popen(plan.client.host, plan.client.command, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    else:
        assert plan.client.vm_state is not None
        (plan.client.vm_state / GO_FILE).touch()
    interrupted = False
    try:
        _wait_for_client(spec, net, client_proc, started, work, timeline_log, progress, observer,
                         _transfer_progress(spec, eta),
                         timeline_zero_file=(work / "client.samples.csv"
                                             if plan.client.vm_state is not None else None))
    except KeyboardInterrupt:
        # keep what got through: the client reports on SIGTERM (a second Ctrl-C aborts)
        interrupted = True
        progress("interrupted: stopping the client; the result keeps what got through")
        if client_proc.poll() is None:
            client_proc.terminate()
    # a VM endpoint also needs time to collect its guest's counters and stop the VM
    client = finish_endpoint(client_proc, grace_s=40 if plan.client.vm_state else 10)
    # a server that never saw the connection (refused, reset before accept) waits in accept:
    # SIGTERM makes it report that, so every run ends with both reports. A client that ended on
    # a reset or a refusal has settled the class (reset, whatever the server reports), and the
    # connection is gone: the server gets a moment to notice, not the full grace period.
    server = finish_endpoint(server_proc, grace_s=40 if plan.server.vm_state
                             else RESET_GRACE_S if ended_by_reset(client) else 5)
    server.stdout = first + server.stdout
    after = {host: kernel_mptcp.read_counters(pid) for host, pid in pids.items()}
    for endpoint in plan.endpoints:  # a VM endpoint's counters are its guest's, not the panel's
        summary = read_vm_summary(endpoint)
        if summary is not None:
            before[endpoint.host] = summary["counters_before"]
            after[endpoint.host] = summary["counters_after"]
    record = TransferRecord(
        client=client, server=server, interrupted=interrupted, timeline=timeline_log,
        congestion=congestion, counters_before=before, counters_after=after,
        middlebox_stats=net.inline_stats(),
        loss_counters={node: loss.counters() for node, loss in net.losses.items()},
        shaping={name: [s.read_back() for s in shapers] for name, shapers in net.shapers.items()},
        vm_summaries={e.role: summary for e in plan.endpoints if (summary := read_vm_summary(e))})
    if capture is not None:
        counts = stop_capture(capture, work)
        if counts is not None and counts.dropped_by_kernel:
            progress(f"capture: {counts.dropped_by_kernel} packets dropped by the kernel "
                     "(the capture, and wire.json, miss them)")
    return record


def _sample_time(started_at_unix: float | None, since_start_s: float) -> float | None:
    """Wall-clock time of an endpoint sample taken `since_start_s` after its connection was up."""
    return None if started_at_unix is None else round(started_at_unix + since_start_s, 6)


def collect(plan: RunPlan, transfer: TransferRecord, work: Path, out_dir: Path, *,
            timings: dict[str, float], teardown_problems: list[str]) -> Result:
    """Stage 4: endpoint reports, counters and samples -> the typed Result (and the time
    series and capture files next to it)."""
    spec = plan.spec
    client_out, server_out = transfer.client, transfer.server
    if transfer.interrupted and not (client_out.stdout.strip() and server_out.stdout.strip()):
        raise KeyboardInterrupt("run interrupted before both endpoints reported")
    stderr_tails = (f"client stderr: {client_out.stderr.strip()[-300:]}; "
                    f"server stderr: {server_out.stderr.strip()[-300:]}")
    try:
        _l, client_reports = parse_output(client_out.stdout)
        _l, server_reports = parse_output(server_out.stdout)
    except ReportError as exc:
        raise RunFailed(f"unreadable endpoint output: {exc}; {stderr_tails}") from exc
    if not client_reports or not server_reports:
        raise RunFailed(f"an endpoint produced no report; {stderr_tails}")
    problem = command_problem(client_out.stdout) or command_problem(server_out.stdout)
    if problem is not None:  # a command endpoint's program never exited: bad input, no result
        raise SpecError(problem)
    record = merge_reports(client_reports[-1], server_reports[-1])
    counters = {host: kernel_mptcp.counter_deltas(transfer.counters_before[host],
                                                  transfer.counters_after[host])
                for host in transfer.counters_before}
    expected_subflows = expected_carrying_subflows(spec, plan.client.addresses)
    receiver_role = "server" if spec.traffic.direction == "upload" else "client"
    received = received_file_of(work, receiver_role)
    verdict = run_verdict(record, transfer.middlebox_stats, spec.seed, received)
    if is_request_response(record):
        verdict = with_request_stream(record, verdict)
        write_latency_csv(out_dir / LATENCY_FILE, record)
    received.unlink(missing_ok=True)
    outcome, evidence = classify(record, counters, expected_subflows, verdict)

    sender_samples = work / ("client.samples.csv" if spec.traffic.direction == "upload"
                             else "server.samples.csv")
    series = bin_samples(sender_samples) if sender_samples.exists() else []
    write_timeseries(out_dir / TIMESERIES_FILE, series)
    for name in (CAPTURE_PCAP, CAPTURE_LOG):
        if spec.capture and (work / name).exists():
            shutil.copy(work / name, out_dir / name)
    sender_started = (record.client if spec.traffic.direction == "upload" else record.server).started_at_unix
    connection = ConnectionResult(
        client_stack=plan.client.record.stack,
        server_stack=plan.server.record.stack,
        mptcp=record.mptcp_used,
        outcome=outcome,
        evidence=evidence,
        subflows=[SubflowResult(local=s.local, remote=s.remote, bytes=s.bytes_acked, bytes_sent=s.bytes_sent,
                                bytes_retrans=s.bytes_retrans, rtt_ms=round(s.rtt_us / 1000, 3),
                                open_at_end=s.open_at_end, family=family_label(s.local),
                                last_sample_unix=_sample_time(sender_started, s.last_seen_s))
                  for s in record.subflows],
        bytes=record.bytes,
        duration_s=record.client.duration_s if spec.traffic.direction == "upload"
        else record.server.duration_s,
        goodput_mbps=record.goodput_mbps,
        integrity=verdict.integrity,
        integrity_verdict=verdict.as_json(),
        expected_subflows=expected_subflows,
        problems=list(record.problems),
        sha256={"client": record.client.sha256, "server": record.server.sha256},
        counters=counters,
        # a python end's own counters that moved (MPTcpExt names without the prefix; None for a
        # kernel end), as outcome.py read them
        stack_counters={end.role: None if end.stack_counters is None
                        else {k: v for k, v in sorted(end.stack_counters.items()) if v}
                        for end in (record.client, record.server)},
        mptcp_info={"client": record.client.mptcp_info.__dict__ if record.client.mptcp_info else None,
                    "server": record.server.mptcp_info.__dict__ if record.server.mptcp_info else None},
        latency=latency_fields(record, spec.traffic.requests) if is_request_response(record) else None,
    )
    expectations = check_expectations(spec.expect, connection.to_json())
    if "trace_share" in spec.expect:
        expectations = _with_trace_share(plan, series, connection.duration_s, expectations)
    if transfer.interrupted:
        expectations = {"passed": False, "failures": ["run interrupted (Ctrl-C or SIGTERM)"]}
    outputs = {"client": client_out, "server": server_out}
    return Result(
        name=spec.name,
        description=spec.description,
        spec=spec.as_dict(),
        seed=spec.seed,
        environment={**environment(plan.backends), "tcp_congestion_control": transfer.congestion},
        topology=plan.topo.describe(),
        middleboxes=[{"node": b.node, "type": b.type, "params": b.params} for b in spec.middleboxes],
        middlebox_stats=transfer.middlebox_stats,
        timeline=transfer.timeline,
        shaping=transfer.shaping,
        loss_counters=transfer.loss_counters,
        connections=[connection],
        timeseries=timeseries_meta(BIN_S),
        timings=timings,
        expect=spec.expect,
        expectations=expectations,
        endpoints={e.role: replace(e.record, exit_code=outputs[e.role].exit_code,
                                   **_vm_fields(transfer.vm_summaries.get(e.role)),
                                   **_command_fields(e, record))
                   for e in plan.endpoints},
        teardown_problems=teardown_problems,
        interrupted=transfer.interrupted,
    )


def _with_trace_share(plan: RunPlan, series: list[dict[str, Any]], duration_s: float,
                      expectations: dict[str, Any]) -> dict[str, Any]:
    """[expect].trace_share: a link's share of the bytes per up/down window (testbed.trace_share)."""
    from testbed.trace_share import trace_share_result

    expect = plan.spec.expect["trace_share"]
    link = plan.topo.links[expect["link"]]
    addresses = {link.address_of(link.a), link.address_of(link.b)}
    end_s = plan.spec.traffic.seconds or duration_s
    share = trace_share_result(expect, plan.spec.timeline, addresses, series, end_s, BIN_S)
    failures = expectations["failures"] + share["failures"]
    return {**expectations, "passed": not failures, "failures": failures,
            "trace_share": share["windows"]}


def _vm_fields(summary: dict[str, Any] | None) -> dict[str, Any]:
    """A VM endpoint's record: the guest's release and its figures (counters are in the
    connection's `counters`, so not repeated here)."""
    if summary is None:
        return {}
    return {"kernel": summary["kernel"],
            "vm": {k: v for k, v in summary.items() if not k.startswith("counters_")}}


def _command_fields(endpoint: EndpointPlan, record: Any) -> dict[str, Any]:
    """A command endpoint's record: its program line, exit status, stderr tail, kernel view."""
    if endpoint.stack != "command":
        return {}
    report = record.client if endpoint.role == "client" else record.server
    line = endpoint.command[endpoint.command.index("--command") + 1]
    return {"command": {"line": line, "exit_status": report.command_exit_status,
                        "stderr_tail": report.command_stderr, "kernel_view": report.kernel_view}}


def _transfer_progress(spec: ExperimentSpec, stream: TextIO | None) -> TransferProgress | None:
    if stream is None:
        return None
    timeline_end = max((event.at_s for event in spec.timeline), default=0.0)
    traffic = spec.traffic
    responses = traffic.requests * traffic.response_bytes if traffic.requests and traffic.response_bytes \
        else None  # request/response traffic: the responses are the download
    return TransferProgress(seconds=traffic.seconds if traffic.bytes is None and responses is None else None,
                            total_bytes=traffic.bytes or responses, timeline_end_s=timeline_end,
                            label=spec.name, stream=stream)


def apply_timeline_event(net: Network, event: TimelineEvent, now: float,
                         progress: Progress) -> dict[str, Any]:
    """Apply one timeline entry to the live network at `now` (seconds on the caller's clock);
    returns its entry of result.json's timeline (with the box's counters at a switch)."""
    if event.middlebox:
        node, index = event.middlebox_slot
        assert event.active is not None
        counters = net.set_middlebox_active(node, index, event.active)
        progress(f"t={now:5.2f}s middlebox {event.middlebox} {'on' if event.active else 'off'}")
        return {"at_s": round(now, 3), "planned_at_s": event.at_s, "middlebox": event.middlebox,
                "active": event.active, "counters": counters}
    entry: dict[str, Any] = {"at_s": round(now, 3), "planned_at_s": event.at_s, "link": event.link}
    if event.set:
        entry["params"] = net.change_link(event.link, event.set).as_dict()
    if event.up is not None:
        net.set_link_up(event.link, event.up)
        entry["up"] = event.up
    if event.trace:
        entry["trace"] = event.trace
    if not event.trace or event.up is not None:  # a trace's many rate changes are not news
        progress(f"t={now:5.2f}s link {event.link}: {event.set or ''}"
                 f"{'' if event.up is None else (' up' if event.up else ' down')}")
    return entry


def _wait_for_client(spec: ExperimentSpec, net: Network, client_proc: subprocess.Popen, started: float,
                     work: Path, timeline_log: list[dict[str, Any]], progress: Progress,
                     observer: Observer | None, bar: TransferProgress | None,
                     timeline_zero_file: Path | None = None) -> None:
    """Apply the timeline while the client runs; past the deadline SIGTERM it. The bar (if any)
    follows the client's samples file: cumulative bytes per subflow.

    `timeline_zero_file`: the timeline's t=0 is when this file appears instead of `started`. A VM
    client's program starts seconds after `go` (Python over 9p in a slow guest) and writes its
    samples file once connected, so a box switched on "2 s into the transfer" is, on every
    kernel, switched on 2 s after the connection began."""
    from testbed.demo.livegraph import SampleTail

    pending = list(spec.timeline)
    deadline = started + spec.traffic.timeout_s + spec.traffic.planned_s + 10
    zero: float | None = started if timeline_zero_file is None else None
    tail = SampleTail(work / "client.samples.csv") if bar is not None else None
    per_subflow: dict[str, int] = {}
    sampled_at = 0.0
    next_tick = 0.0
    try:
        while client_proc.poll() is None:
            raise_lost_interrupt()
            if zero is None and timeline_zero_file is not None and timeline_zero_file.exists():
                zero = time.monotonic()
                if pending:
                    progress(f"the VM client connected {zero - started:.1f} s after go: "
                             "its timeline starts now")
            now = time.monotonic() - (started if zero is None else zero)
            while zero is not None and pending and pending[0].at_s <= now:
                timeline_log.append(apply_timeline_event(net, pending.pop(0), now, progress))
            if time.monotonic() > deadline:
                client_proc.terminate()  # the endpoint reports what got through, then exits
                break
            if observer is not None:
                observer(work, time.monotonic() - started)
            if bar is not None and tail is not None and now >= next_tick:
                next_tick = now + 0.25
                for sample in tail.read_new():
                    per_subflow[sample.local] = sample.bytes
                    sampled_at = max(sampled_at, sample.t_s)
                bar.tick(now, sum(per_subflow.values()), sampled_at or None)
            wait = min(0.05, max(0.001, pending[0].at_s - now)) if pending and zero is not None else 0.05
            time.sleep(wait)
        if pending and zero is None:
            why = "the VM client never connected (no samples file)"
            timeline_log.extend(
                {"at_s": None, "planned_at_s": event.at_s,
                 **({"middlebox": event.middlebox} if event.middlebox else {"link": event.link}),
                 "applied": False, "why": why} for event in pending)
    finally:
        if bar is not None:
            bar.finish()


INCOMPLETE_OUTCOMES = ("mp-fail", "reset", "stalled")
RESET_ERRORS = ("reset", "refused")
RESET_GRACE_S = 1.0


def ended_by_reset(endpoint: EndpointOutput) -> bool:
    """The endpoint's report says its connection was reset or refused (testbed.outcome's
    `reset` rule then holds whatever the other end reports)."""
    try:
        _listening, reports = parse_output(endpoint.stdout)
    except ReportError:
        return False
    return bool(reports) and reports[-1].error_kind in RESET_ERRORS


def finish_endpoint(proc: subprocess.Popen, *, grace_s: float) -> EndpointOutput:
    """Wait for an endpoint; past `grace_s` SIGTERM it (it still prints its report), and only
    SIGKILL one that ignores that too (its exit code is then recorded as None)."""
    try:
        out, err = proc.communicate(timeout=grace_s)
        return EndpointOutput(out, err, proc.returncode)
    except subprocess.TimeoutExpired:
        proc.terminate()
    try:
        out, err = proc.communicate(timeout=5)
        return EndpointOutput(out, err, proc.returncode)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return EndpointOutput(out, err, None)


def check_expectations(expect: dict[str, Any], connection: dict[str, Any]) -> dict[str, Any]:
    failures = []
    wanted = expect.get("outcome", [])
    wanted = wanted if isinstance(wanted, list) else [wanted]
    if wanted and connection["outcome"] not in wanted:
        failures.append(f"outcome {connection['outcome']} != expected {' or '.join(wanted)}")
    if "min_goodput_mbps" in expect and connection["goodput_mbps"] < expect["min_goodput_mbps"]:
        failures.append(f"goodput {connection['goodput_mbps']:.1f} < {expect['min_goodput_mbps']} Mbit/s")
    if "max_goodput_mbps" in expect and connection["goodput_mbps"] > expect["max_goodput_mbps"]:
        failures.append(f"goodput {connection['goodput_mbps']:.1f} > {expect['max_goodput_mbps']} Mbit/s")
    if "subflows" in expect:
        carrying = sum(1 for s in connection["subflows"] if s["bytes"] > 0)
        if carrying != expect["subflows"]:
            failures.append(f"{carrying} subflows carried data, expected {expect['subflows']}")
    integrity = connection["integrity"]
    if "integrity" in expect:
        if integrity != expect["integrity"]:
            failures.append(f"integrity {integrity} != expected {expect['integrity']}")
    elif integrity not in ("ok", "alg-edited") and not (
            integrity == "truncated" and wanted and set(wanted) <= set(INCOMPLETE_OUTCOMES)):
        # without an integrity expectation: no corrupted byte, and a short stream only when the
        # transfer is expected to break
        failures.append(f"integrity {integrity}")
    return {"passed": not failures, "failures": failures}
