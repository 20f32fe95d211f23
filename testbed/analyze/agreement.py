"""Does the analysis of a testbed capture agree with the endpoints, the kernels' counters and
tshark? The checks of docs/analyze.md ("Agreement"), one capture at a time.

Every check compares the same quantity on both sides:

- bytes per subflow: the sender's `tcpi_bytes_acked` (or the python stack's snd_una) at its
  last sample of that subflow, against the ACKs of the capture up to that same instant (the
  analysis is cut at `last_sample_unix` of result.json): a subflow that closed, or a socket
  the endpoint gave up on while the kernel kept sending, is not read after that sample;
- total bytes: the data level's acknowledged bytes against the request plus what the receiving
  application read;
- reinjections against the sender's and the receiver's MPTcpExt counters (see `reinjection`);
- tshark's MPTCP analysis of the same file (`tshark_view`): connections, subflows, highest
  data ACK, and its reinjection marks.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.analyze.analyzer import Analysis
from testbed.analyze.capture import open_capture
from testbed.command import run_command
from testbed.errors import TestbedError

SYN_FALLBACK = "no MP_CAPABLE on the SYN/ACK"  # testbed.analyze.analyzer's name for it
REQUEST_BYTES = 24  # the client's request precedes the transfer (testbed.endpoints.transfer)
TSHARK_TIMEOUT_S = 600.0


def within(ours: int, theirs: int) -> bool:
    """Within 0.1 % (and 2 bytes: the kernel's bytes_acked also counts the SYN and the FIN)."""
    return abs(ours - theirs) <= max(2, theirs * 0.001)


@dataclass(frozen=True)
class Check:
    """One quantity as the analysis and another source see it."""

    name: str
    ours: Any
    theirs: Any
    verdict: str  # "agree", "differ" or "n/a" (the other side has no such figure)
    rule: str  # what agreement means for this check

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "ours": self.ours, "theirs": self.theirs,
                "verdict": self.verdict, "rule": self.rule}


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("agree" if ok else "differ")


def analyse(path: Path, *, until_s: float | None = None) -> Analysis:
    """The analysis of a capture (its first `until_s` seconds), plain TCP included."""
    analysis = Analysis()
    reader = open_capture(path)
    packet = analysis.packet
    stop: float | None = None
    for ts, frame, offset, version in reader:
        if until_s is not None:
            if stop is None:
                stop = ts + until_s
            elif ts > stop:
                break
        packet(ts, frame, offset, version)
    analysis.finish()
    return analysis


def capture_start(path: Path) -> float:
    """Timestamp of the capture's first packet (Unix seconds)."""
    for ts, _frame, _offset, _version in open_capture(path):
        return ts
    raise TestbedError(f"{path}: a capture without any packet")


def _find_subflow(analysis: Analysis, local: str, remote: str) -> tuple[Any, int] | None:
    """The subflow whose one side is `local` and other side `remote`, and the side of `local`."""
    for subflow in analysis.subflows:
        ends = [subflow.endpoint(i) for i in (0, 1)]
        if ends == [local, remote]:
            return subflow, 0
        if ends == [remote, local]:
            return subflow, 1
    return None


def subflow_checks(capture: Path, connection: dict[str, Any],
                   full: Analysis) -> list[Check]:
    """Bytes per subflow: the sender's counters at its last sample against the capture's ACKs
    up to that instant (one analysis per distinct instant after which the capture goes on)."""
    start = capture_start(capture)
    end_of_capture = full.last_ts
    cut_analyses: dict[float, Analysis] = {}
    checks = []
    for endpoint in connection["subflows"]:
        sampled = endpoint.get("last_sample_unix")
        analysis = full
        when = "end of capture"
        if sampled is not None and sampled < end_of_capture:
            until = round(sampled - start, 4)
            if until not in cut_analyses:
                cut_analyses[until] = analyse(capture, until_s=until)
            analysis = cut_analyses[until]
            when = f"{until:.3f} s (last sample)"
        found = _find_subflow(analysis, endpoint["local"], endpoint["remote"])
        ours = found[0].dirs[found[1]].bytes_acked if found else None
        ok = None if ours is None else within(ours, endpoint["bytes"])
        checks.append(Check(f"subflow {endpoint['local']} bytes acked at {when}", ours,
                            endpoint["bytes"], "differ" if ours is None else _verdict(ok),
                            "within 0.1 % (SYN and FIN: 2 bytes)"))
    return checks


def _sender_data(analysis: Analysis, upload: bool) -> tuple[Any, Any] | None:
    """(connection, its sending direction's DataDirection) of the run's one MPTCP connection."""
    if not analysis.connections:
        return None
    connection = analysis.connections[0]
    return connection, connection.data[0 if upload else 1]


def total_check(analysis: Analysis, result_connection: dict[str, Any], upload: bool) -> Check:
    """What the data level acknowledged against the request plus what the receiver read. With
    no MPTCP connection in the capture (a fallback at the SYN), the TCP level of the one subflow
    is the data level."""
    received = result_connection["bytes"]
    theirs = received + REQUEST_BYTES if upload else received
    rule = "exact: data-level bytes acknowledged = request + bytes the receiver read"
    found = _sender_data(analysis, upload)
    if found is not None:
        ours = found[1].summary()["data_acked"]
    elif analysis.subflows:
        ours = analysis.subflows[0].dirs[0 if upload else 1].bytes_acked
        rule += " (plain TCP: the subflow's ACKs)"
    else:
        return Check("total bytes", None, theirs, "differ", rule)
    if ours != theirs and "interrupted" in " ".join(result_connection["problems"]):
        # The receiver fell back and was stopped (SIGTERM) while the sender, still MPTCP,
        # kept sending (Linux re-injects into a fallen-back peer): the data ACKs stopped at
        # the fallback, the receiver read its subflow's byte stream, and the kernel had
        # acknowledged bytes the application never read when it was stopped.
        tcp_acked = sum(sub.dirs[0 if upload else 1].bytes_acked for sub in analysis.subflows)
        return Check("total bytes (receiver fell back, then stopped)", tcp_acked, theirs, "n/a",
                     "informational: subflow bytes acked vs request + bytes read (docs/analyze.md)")
    return Check("total bytes", ours, theirs, _verdict(ours == theirs), rule)


def reinjection_checks(analysis: Analysis, result_connection: dict[str, Any], upload: bool,
                       sender_closed_subflow: bool) -> list[Check]:
    """Reinjected bytes against the counters of both ends.

    - Linux sender: `mptcpi_bytes_retrans` (MPTCP_INFO, 6.5+) counts what `__mptcp_retrans`
      sends again; every such byte is on the wire again under another subflow sequence number,
      so the capture shows at least as many, and exactly as many (0.1 %) when no subflow of
      the sender closed or went stale: then Linux pushes the data the subflow held again
      through the normal send path (`__mptcp_retransmit_pending_data`), which no byte counter
      counts (MPTcpExtSubflowStale says it happened).
    - Linux receiver: `MPTcpExtDuplicateData` counts segments whose data had arrived already;
      each was sent twice, so it implies a reinjection in the capture.
    - python sender: its `Reinjected` counter counts chunks reinjected; a reinjection in the
      capture implies the counter moved, and the counter moving implies one in the capture.
    """
    checks = []
    found = _sender_data(analysis, upload)
    ours = found[1].reinjected_bytes if found else 0
    events = (found[1].summary()["reinjections"]) if found else 0
    sender, receiver = ("client", "server") if upload else ("server", "client")
    info = (result_connection.get("mptcp_info") or {}).get(sender) or {}
    kernel_retrans = info.get("bytes_retrans")
    stack = (result_connection.get("stack_counters") or {}).get(sender)
    stale = (result_connection.get("counters") or {}).get(sender, {}).get("MPTcpExtSubflowStale", 0)
    if kernel_retrans is not None and stack is None:
        if sender_closed_subflow or stale:
            checks.append(Check("reinjected bytes vs sender mptcpi_bytes_retrans", ours,
                                kernel_retrans, _verdict(ours >= kernel_retrans),
                                "capture >= counter (a subflow closed or went stale: data "
                                "re-pushed uncounted)"))
        else:
            checks.append(Check("reinjected bytes vs sender mptcpi_bytes_retrans", ours,
                                kernel_retrans, _verdict(within(ours, kernel_retrans)),
                                "within 0.1 % (no subflow closed)"))
    if stack is not None:
        count = stack.get("Reinjected", 0)
        checks.append(Check("reinjections vs python sender Reinjected", events, count,
                            _verdict((events > 0) == (count > 0)),
                            "both zero or both non-zero"))
    duplicates = (result_connection.get("counters") or {}).get(receiver, {}).get(
        "MPTcpExtDuplicateData")
    receiver_stack = (result_connection.get("stack_counters") or {}).get(receiver)
    if receiver_stack is not None:
        duplicates = receiver_stack.get("DuplicateData")
    if duplicates:
        checks.append(Check("reinjected bytes vs receiver DuplicateData", ours, duplicates,
                            _verdict(ours >= duplicates),
                            "a duplicate at the receiver implies a reinjection (bytes >= count)"))
    return checks


def tshark_view(capture: Path) -> dict[int, dict[str, Any]] | None:
    """What tshark's MPTCP analysis (analyze_mappings, intersubflows_retransmission, relative
    sequence numbers) says of a capture, per mptcp.stream: its subflows, the highest data ACK
    each end sent (the end that opened the subflow is the "client"), the bytes of the packets
    it marks `mptcp.reinjection_of`, and payload it flags "no mapping available" that carries
    no mapping of its own. None without tshark."""
    if shutil.which("tshark") is None:
        return None
    fields = ["tcp.stream", "mptcp.stream", "ip.src", "tcp.srcport", "tcp.len", "mptcp.ack",
              "mptcp.reinjection_of", "mptcp.dss.missing_mapping", "tcp.options.mptcp.datalvllen"]
    done = run_command(
        ["tshark", "-r", str(capture), "-o", "mptcp.analyze_mptcp:TRUE",
         "-o", "mptcp.analyze_mappings:TRUE", "-o", "mptcp.intersubflows_retransmission:TRUE",
         "-o", "mptcp.relative_sequence_numbers:TRUE", "-T", "fields",
         *[arg for name in fields for arg in ("-e", name)]], what="tshark's MPTCP analysis",
        timeout_s=TSHARK_TIMEOUT_S)
    opener: dict[int, str] = {}  # tcp.stream -> the address:port of its first packet
    streams: dict[int, dict[str, Any]] = {}
    for line in done.stdout.splitlines():
        cells = line.split("\t")
        if len(cells) < len(fields) or not cells[0]:
            continue
        tcp_stream, mptcp_stream, src, port, length, ack, reinjection, missing, own_map = cells[:9]
        sender = f"{src}:{port}"
        first = opener.setdefault(int(tcp_stream), sender)
        if not mptcp_stream:
            continue
        entry = streams.setdefault(int(mptcp_stream), {
            "subflows": set(), "data_ack": {}, "reinjected_bytes": 0, "reinjected_packets": 0,
            "unmapped_packets": 0, "unmapped_flagged": 0})
        entry["subflows"].add(int(tcp_stream))
        size = int(length or 0)
        if ack:
            end = "client" if sender == first else "server"
            value = max(int(v) for v in ack.split(","))
            entry["data_ack"][end] = max(entry["data_ack"].get(end, 0), value)
        if reinjection and size:
            entry["reinjected_bytes"] += size
            entry["reinjected_packets"] += 1
        if missing and size:
            entry["unmapped_flagged"] += 1
            if not own_map:
                entry["unmapped_packets"] += 1
    return {index: {**entry, "subflows": len(entry["subflows"])} for index, entry in streams.items()}


def tshark_checks(analysis: Analysis, view: dict[int, dict[str, Any]] | None) -> list[Check]:
    """Our connections against tshark's: subflows, the highest data ACK each end sent
    (relative, as ours), reinjected bytes (tshark marks only reinjections whose mapping it pairs
    with the original one: a subset of ours) and payload without any mapping."""
    if view is None:
        return [Check("tshark", None, None, "n/a", "tshark not installed")]
    # tshark gives no mptcp.stream to a connection whose SYN/ACK had no MP_CAPABLE
    connections = [c for c in analysis.connections if c.fallback != SYN_FALLBACK]
    checks = [Check("MPTCP connections (tshark)", len(connections), len(view),
                    _verdict(len(connections) == len(view)),
                    "equal (not counting fallbacks at the SYN/ACK)")]
    for connection, (_index, theirs) in zip(connections, sorted(view.items()), strict=False):
        checks.append(Check(f"connection {connection.index} subflows (tshark)",
                            len(connection.subflows), theirs["subflows"],
                            _verdict(len(connection.subflows) == theirs["subflows"]), "equal"))
        for side, end in ((0, "server"), (1, "client")):  # data of `side`, acknowledged by `end`
            ours_ack = connection.data[side].data_ack
            their_ack = theirs["data_ack"].get(end)
            if their_ack is None and (not ours_ack or connection.fallback is not None):
                continue  # none on the wire (after a fallback ours follows the subflow's ACKs)
            checks.append(Check(f"connection {connection.index} highest data ACK from the {end} "
                                "(tshark)", ours_ack, their_ack,
                                _verdict(ours_ack == their_ack), "equal (relative DSNs)"))
        ours_reinjected = sum(d.summary()["reinjections"] for d in connection.data)
        checks.append(Check(f"connection {connection.index} reinjected segments (tshark)",
                            ours_reinjected, theirs["reinjected_packets"],
                            _verdict(theirs["reinjected_packets"] <= ours_reinjected),
                            "tshark's mptcp.reinjection_of packets <= ours (it pairs whole "
                            "mappings only)"))
        ours_unmapped = connection.violations.get("payload without a mapping", 0)
        checks.append(Check(f"connection {connection.index} payload without any mapping (tshark)",
                            ours_unmapped, theirs["unmapped_packets"],
                            _verdict((ours_unmapped > 0) == (theirs["unmapped_packets"] > 0)),
                            "both zero or both non-zero (tshark's flag on packets that carry "
                            "their own mapping is not counted)"))
    return checks


def compare_run(run_dir: Path, *, tshark: bool = True) -> dict[str, Any]:
    """Every check on one run directory (result.json and capture.pcap of `testbed run`, or a
    matrix cell)."""
    result_file, capture = run_dir / "result.json", run_dir / "capture.pcap"
    if not result_file.exists() or not capture.exists():
        raise TestbedError(f"{run_dir}: needs result.json and capture.pcap (run the spec with "
                           "[capture] pcap = true)")
    result = json.loads(result_file.read_text())
    (connection,) = result["connections"]
    upload = result["spec"].get("traffic", {}).get("direction", "upload") == "upload"
    full = analyse(capture)
    checks = subflow_checks(capture, connection, full)
    cut = _analysis_at_last_sample(capture, connection, full)
    # a subflow closed while the connection went on: reset (a rejected join, MP_TCPRST) or
    # reported closed by the endpoint before its last sample
    closed = (any(not s.get("open_at_end", True) for s in connection["subflows"])
              or any(d.rst for c in cut.connections for sub in c.subflows for d in sub.dirs))
    checks.append(total_check(full, connection, upload))
    checks.extend(reinjection_checks(cut, connection, upload, closed))
    if tshark:
        checks.extend(tshark_checks(full, tshark_view(capture)))
    return {"capture": str(capture), "outcome": connection["outcome"],
            "integrity": connection["integrity"], "checks": [c.as_json() for c in checks],
            "agree": all(c.verdict != "differ" for c in checks)}


def _analysis_at_last_sample(capture: Path, connection: dict[str, Any], full: Analysis) -> Analysis:
    """The analysis up to the sender's last sample (its counters stop there), or the full one."""
    times = [s["last_sample_unix"] for s in connection["subflows"] if s.get("last_sample_unix")]
    if not times or max(times) >= full.last_ts:
        return full
    return analyse(capture, until_s=max(times) - capture_start(capture))


def summarise(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        for check in row["checks"]:
            counts[check["verdict"]] = counts.get(check["verdict"], 0) + 1
    return counts


def compare_sim(sim: dict[str, Any], capture: Path, *, tshark: bool = True) -> dict[str, Any]:
    """Every check on a simulator capture (`testbed stack sim --pcap DIR`, the core link next
    to the server) against the simulated endpoints' own state: the server's in-order bytes per
    subflow (what its ACKs say), the transfer size, the client stack's Reinjected counter and
    the server's DuplicateData."""
    analysis = analyse(capture)
    checks = []
    for subflow in sim["server_stats"]["subflows"]:
        found = _find_subflow(analysis, subflow["remote"], subflow["local"])
        ours = found[0].dirs[found[1]].bytes_acked if found else None
        checks.append(Check(f"subflow {subflow['remote']} bytes acked", ours,
                            subflow["bytes_received"], _verdict(ours == subflow["bytes_received"]),
                            "exact: the server's in-order bytes"))
    found = _sender_data(analysis, True)
    total = found[1].summary()["data_acked"] if found else None
    checks.append(Check("total bytes", total, sim["received"], _verdict(total == sim["received"]),
                        "exact: data-level bytes acknowledged = bytes the server received"))
    events = found[1].summary()["reinjections"] if found else 0
    counted = sim["client_stats"]["counters"].get("Reinjected", 0)
    checks.append(Check("reinjections vs python sender Reinjected", events, counted,
                        _verdict(events <= counted),
                        "capture <= counter (the core link is after the paths: a reinjection "
                        "lost on its path, or whose original was, is not seen as one)"))
    duplicates = sim["server_stats"]["counters"].get("DuplicateData", 0)
    if duplicates:
        checks.append(Check("reinjected bytes vs receiver DuplicateData", found[1].reinjected_bytes
                            if found else 0, duplicates,
                            _verdict(found is not None and found[1].reinjected_bytes >= duplicates),
                            "a duplicate at the receiver implies a reinjection (bytes >= count)"))
    if tshark:
        checks.extend(tshark_checks(analysis, tshark_view(capture)))
    return {"capture": str(capture), "outcome": sim["outcome"], "integrity":
            "ok" if sim.get("hash_ok") else "corrupted", "checks": [c.as_json() for c in checks],
            "agree": all(c.verdict != "differ" for c in checks)}
