"""The soak loop: build the network once, run transfers back to back until the time is up while
the chaos timeline is applied on the soak's clock, judge each transfer twice (the testbed's
oracle, as `testbed run` prints it, and the hashes of what arrived), then tear down and count.

It reuses the runner's stages: `plan_run` for every transfer's endpoint commands, `Network` for
the network (its bumps planned from the whole soak's spec, so the stripper is switchable and
paths with delay changes get their delay stages), `run_endpoints` and `collect` per transfer
(one result.json each, under transfers/), and `apply_timeline_event` for the live changes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.endpoint_commands import received_file_of
from testbed.endpoints.report import ReportError, parse_output
from testbed.errors import RunFailed
from testbed.net.build import Network
from testbed.net.state import RunState, new_run_id, work_dir_of
from testbed.result import RESULT_FILE
from testbed.results import write_json_atomic
from testbed.runner import (
    EndpointOutput,
    apply_timeline_event,
    collect,
    detect_backends,
    environment,
    plan_run,
    run_endpoints,
    sigterm_as_interrupt,
)
from testbed.sim.rng import derive_seed
from testbed.soak.monitor import ProcessSampler, ProcessSeries, census
from testbed.soak.schedule import SoakSettings, TransferSlot, chaos_timeline, soak_spec, transfer_slots
from testbed.soak.truth import judge_received

Progress = Callable[[str], None]
SAMPLES_FILE = "processes.csv"  # every RSS/fd sample, streamed (testbed.soak.monitor)
MARKER_VARIABLE = "TESTBED_SOAK_RUN"  # every process the soak starts inherits it (the census)
SHORTEST_TRANSFER_S = 5.0


@dataclass
class SoakRecord:
    """Everything the soak observed, for testbed.soak.criteria to judge and write."""

    settings: SoakSettings
    run_id: str
    environment: dict[str, Any]
    nat_outages: list[tuple[float, float]]
    transfers: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    processes: list[ProcessSeries] = field(default_factory=list)
    bumps_alive_at_end: dict[str, bool] = field(default_factory=dict)
    census_before: dict[str, Any] = field(default_factory=dict)
    census_after: dict[str, Any] = field(default_factory=dict)
    teardown_problems: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    interrupted: bool = False


def _nat_state(stats: dict[str, Any]) -> dict[str, int]:
    for box in (stats.get("mb_a") or {}).get("middleboxes") or []:
        if isinstance(box, dict) and "state" in box:
            return dict(box["state"])
    return {}


def _sent_bytes(output: EndpointOutput) -> int | None:
    """What the sending endpoint says it sent (its last report), None without one."""
    try:
        _listening, reports = parse_output(output.stdout)
    except ReportError:
        return None
    return reports[-1].bytes if reports else None


def _died(output: EndpointOutput) -> str | None:
    """Why an endpoint counts as having died (a signal, killed by the runner, a traceback)."""
    if output.exit_code is None:
        return "killed after ignoring SIGTERM"
    if output.exit_code < 0:
        return f"ended by signal {-output.exit_code}"
    if "Traceback (most recent call last)" in output.stderr:
        return "uncaught exception: " + output.stderr.strip().splitlines()[-1][:200]
    return None


def run_soak(settings: SoakSettings, out_dir: Path, *, progress: Progress = print) -> SoakRecord:
    """Run the soak and return what it saw (soak.json is written by the caller). Ctrl-C or
    SIGTERM ends it early through the same teardown; the record is marked interrupted."""
    settings.check()
    timeline, nat_outages = chaos_timeline(settings)
    base = soak_spec(settings, timeline)
    run_id = new_run_id()
    work = work_dir_of(run_id)
    backends = detect_backends()
    plan = plan_run(base, work, backends)
    interfaces = {iface.name for link in plan.topo.links.values() for seg in link.segments
                  for iface in (seg.left, seg.right)}
    marker = (MARKER_VARIABLE, run_id)
    record = SoakRecord(settings, run_id, environment(backends), nat_outages)
    out_dir.mkdir(parents=True, exist_ok=True)
    previous_marker = os.environ.get(MARKER_VARIABLE)
    os.environ[MARKER_VARIABLE] = run_id
    record.census_before = census(run_id, interfaces, marker)
    progress(f"soak {run_id}: {settings.minutes:g} min on two_path ({settings.rate_mbit:g} Mbit/s "
             f"per path; backends rate={backends.rate} loss={backends.loss} delay={backends.delay}), "
             f"{len(base.timeline)} timeline events, seed {settings.seed}")
    sampler: ProcessSampler | None = None
    try:
        with sigterm_as_interrupt():
            state = RunState.create(run_id)
            try:
                with Network(plan.topo, backends, state, bumps=plan.bumps,
                             shaped_links=plan.shaped_links) as net:
                    sampler = ProcessSampler({node: net.netns(node) for node in plan.topo.nodes},
                                             out_dir / SAMPLES_FILE)
                    sampler.start()
                    try:
                        _transfers(settings, base.timeline, net, work, out_dir, record, progress)
                    except KeyboardInterrupt:
                        record.interrupted = True
                        progress("interrupted: tearing down; soak.json keeps what was seen")
                    finally:
                        sampler.stop()
                        record.elapsed_s = round(time.monotonic() - sampler.started, 1)
                        record.bumps_alive_at_end = {node: proc.process.poll() is None
                                                     for node, proc in net.inline.items()}
                record.teardown_problems = list(net.teardown_problems)
            finally:
                state.remove()
    finally:
        if previous_marker is None:
            os.environ.pop(MARKER_VARIABLE, None)
        else:
            os.environ[MARKER_VARIABLE] = previous_marker
    if sampler is not None:
        record.processes = sampler.snapshot()
    record.census_after = _census_settled(run_id, interfaces, marker)
    return record


def _census_settled(run_id: str, interfaces: set[str], marker: tuple[str, str],
                    grace_s: float = 5.0) -> dict[str, Any]:
    """The census after teardown, given processes ending in the background a few seconds."""
    deadline = time.monotonic() + grace_s
    found = census(run_id, interfaces, marker)
    while (found["processes"] or found["namespaces"]) and time.monotonic() < deadline:
        time.sleep(0.2)
        found = census(run_id, interfaces, marker)
    return found


def _transfers(settings: SoakSettings, events: tuple[Any, ...], net: Network, work: Path,
               out_dir: Path, record: SoakRecord, progress: Progress) -> None:
    """Transfers back to back until the soak's time is up, the timeline applied throughout."""
    started = time.monotonic()
    end = started + settings.duration_s
    pending = list(events)

    def apply_due(*_args: object) -> None:
        now = time.monotonic() - started
        while pending and pending[0].at_s <= now:
            record.timeline.append(apply_timeline_event(net, pending.pop(0), now, lambda _m: None))

    for slot in transfer_slots(settings):
        while not all(net.link_up.values()) and time.monotonic() < end:
            apply_due()  # a transfer starts with both paths up (its first subflow needs path A)
            time.sleep(0.05)
        seconds = min(slot.seconds, end - time.monotonic() - 3.0)
        if seconds < SHORTEST_TRANSFER_S:
            break
        entry = _one_transfer(settings, slot, seconds, net, work, out_dir, started, apply_due)
        record.transfers.append(entry)
        progress(_transfer_line(entry))
        if entry.get("interrupted"):
            raise KeyboardInterrupt("soak interrupted during a transfer")
        apply_due()
    while time.monotonic() < end:  # the rest of the timeline still runs on the bumps
        apply_due()
        time.sleep(0.05)


def _one_transfer(settings: SoakSettings, slot: TransferSlot, seconds: float, net: Network,
                  work: Path, out_dir: Path, started: float,
                  apply_due: Callable[..., None]) -> dict[str, Any]:
    payload_seed = derive_seed(settings.seed, f"soak/transfer/{slot.index}") % (1 << 31)
    spec = soak_spec(settings, [], client=slot.client_stack, server=slot.server_stack,
                     direction=slot.direction, seconds=seconds, seed=payload_seed,
                     port=settings.port + slot.index % 500)
    plan = plan_run(spec, work, net.backends)
    for stale in work.glob("*.samples.csv"):
        stale.unlink()
    nat_before = _nat_state(net.inline_stats())
    begin = time.monotonic() - started
    entry: dict[str, Any] = {"index": slot.index, "pairing": slot.pairing,
                             "client": slot.client_stack, "server": slot.server_stack,
                             "direction": slot.direction, "seconds": round(seconds, 3),
                             "payload_seed": payload_seed, "started_s": round(begin, 2)}
    client_started: list[float] = []

    def observe(work_dir: Path, since_client_s: float) -> None:
        if not client_started:  # the runner's clock starts with the client program
            client_started.append(time.monotonic() - started - since_client_s)
        apply_due(work_dir, since_client_s)

    transfer = run_endpoints(plan, net, work, lambda _m: None, observer=observe)
    entry["ended_s"] = round(time.monotonic() - started, 2)
    entry["nat"] = {"before": nat_before, "after": _nat_state(transfer.middlebox_stats)}
    sender_role = "client" if slot.direction == "upload" else "server"
    receiver_role = "server" if sender_role == "client" else "client"
    outputs = {"client": transfer.client, "server": transfer.server}
    entry["exit_codes"] = {role: out.exit_code for role, out in outputs.items()}
    entry["died"] = {role: why for role, out in outputs.items() if (why := _died(out))}
    sent = _sent_bytes(outputs[sender_role])
    truth = judge_received(received_file_of(work, receiver_role), payload_seed, sent or 0)
    entry["truth"] = truth.as_json() | ({} if sent is not None else {"sender_report": False})
    directory = out_dir / "transfers" / f"{slot.index:03d}"
    directory.mkdir(parents=True, exist_ok=True)
    try:
        result = collect(plan, transfer, work, directory, timings={}, teardown_problems=[])
    except RunFailed as exc:
        received_file_of(work, receiver_role).unlink(missing_ok=True)
        entry.update(verdict=None, outcome=None, error=str(exc))
        return entry
    write_json_atomic(directory / RESULT_FILE, result.to_json())
    connection = result.connection
    if client_started and connection.duration_s > 0:
        # the data phase: from the client's start for as long as the sender sent; what an
        # endpoint does after it (closing, freeing its buffers) is not judged as growth
        entry["data_ended_s"] = round(min(client_started[0] + connection.duration_s,
                                          entry["ended_s"]), 2)
    entry.update(verdict=connection.integrity, outcome=connection.outcome,
                 bytes=connection.bytes, goodput_mbps=round(connection.goodput_mbps, 2),
                 subflows=len(connection.subflows), result=str(directory / RESULT_FILE))
    if transfer.interrupted:
        entry["interrupted"] = True
    return entry


def _transfer_line(entry: dict[str, Any]) -> str:
    verdict = entry.get("verdict")
    truth = entry["truth"]["integrity"]
    agree = "agrees" if verdict == truth else "DISAGREES"
    return (f"  #{entry['index']:03d} t={entry['started_s']:7.1f}s {entry['pairing']:<16} "
            f"{entry['seconds']:5.1f}s {entry.get('outcome') or entry.get('error', '?')}, "
            f"verdict {verdict} ({entry['truth']['received_bytes']:,} B received; hashes say "
            f"{truth}: {agree})" + (f" died: {entry['died']}" if entry["died"] else ""))
