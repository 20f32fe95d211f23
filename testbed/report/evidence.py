"""Options seen on the wire: outcome evidence from a run's capture, read by tshark.

The runner's capture (`[capture] pcap = true`) is taken on every interface of the client host,
so it shows what the client sent before any middlebox and what reached it after them. tshark,
an independent dissector (not our codec), reads it; this module counts, per direction, the
handshake segments and the MPTCP option subtypes, and words what matters for the outcome: an
MP_CAPABLE SYN answered without MP_CAPABLE, MP_JOIN SYNs refused, data without DSS, MP_FAIL,
MP_FASTCLOSE, MP_TCPRST and plain RSTs. It complements testbed.outcome (kernel counters, stack
reports, payload hashes) with what crossed the wire, and needs no change there.

The direction of a segment comes from the server's port (the spec's traffic port): a NAT may
rewrite the client's address, never the port the client connects to.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.command import run_command
from testbed.errors import TestbedError

CAPTURE_FILE = "capture.pcap"
WIRE_FILE = "wire.json"
SUBTYPES = {0: "MP_CAPABLE", 1: "MP_JOIN", 2: "DSS", 3: "ADD_ADDR", 4: "REMOVE_ADDR", 5: "MP_PRIO",
            6: "MP_FAIL", 7: "MP_FASTCLOSE", 8: "MP_TCPRST"}
FIELDS = ("tcp.srcport", "tcp.dstport", "tcp.flags.syn", "tcp.flags.ack", "tcp.flags.reset", "tcp.len",
          "tcp.options.mptcp.subtype")
TSHARK_TIMEOUT_S = 300


@dataclass(frozen=True)
class Segment:
    sent: bool  # by the client (towards the server port)
    client_port: int
    syn: bool
    ack: bool
    rst: bool
    payload: int
    subtypes: frozenset[str]


@dataclass
class WireEvidence:
    counts: dict[str, int] = field(default_factory=dict)
    statements: list[str] = field(default_factory=list)

    def as_dict(self, source: str) -> dict[str, Any]:
        return {"source": source, "dissector": "tshark", "counts": self.counts, "statements": self.statements}


def parse_tshark_fields(text: str, server_port: int) -> list[Segment]:
    """Segments from `tshark -T fields` output (tab-separated, FIELDS order, ';' between the
    occurrences of one field)."""
    segments = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != len(FIELDS):
            raise TestbedError(f"tshark output line {number}: {len(parts)} fields, expected {len(FIELDS)}")
        try:
            src, dst = int(parts[0]), int(parts[1])
            flags = [parts[i] in ("1", "True", "true") for i in (2, 3, 4)]
            payload = int(parts[5] or 0)
            subtypes = frozenset(SUBTYPES.get(int(v), f"subtype {v}") for v in parts[6].replace(",", ";")
                                 .split(";") if v.strip())
        except ValueError as exc:
            raise TestbedError(f"tshark output line {number}: {exc}") from exc
        sent = dst == server_port
        if not sent and src != server_port:
            continue  # not this experiment's connection
        segments.append(Segment(sent, src if sent else dst, *flags, payload, subtypes))
    return segments


def summarize_segments(segments: list[Segment]) -> WireEvidence:
    """Counts per direction and the statements a reader of a fallback table needs."""
    counts: Counter[str] = Counter()
    initial_ports: set[int] = set()
    join_ports: set[int] = set()
    for seg in segments:
        side = "sent" if seg.sent else "received"
        for subtype in seg.subtypes:
            counts[f"{side} {subtype}"] += 1
        if seg.rst:
            counts[f"{side} RST"] += 1
        if seg.sent and not seg.syn and "MP_CAPABLE" in seg.subtypes:
            counts["MP_CAPABLE ACK sent"] += 1  # the third ACK (and the first data, RFC 8684 §3.1)
        if seg.syn and not seg.ack and seg.sent:
            counts["SYN sent"] += 1
            if "MP_JOIN" in seg.subtypes:
                join_ports.add(seg.client_port)
                counts["MP_JOIN SYN sent"] += 1
            else:
                initial_ports.add(seg.client_port)
                if "MP_CAPABLE" in seg.subtypes:
                    counts["MP_CAPABLE SYN sent"] += 1
        if seg.syn and seg.ack and not seg.sent:
            kind = "MP_JOIN" if seg.client_port in join_ports else "MP_CAPABLE"
            counts[f"SYN/ACK received on {kind} subflow"] += 1
            if kind in seg.subtypes:
                counts[f"SYN/ACK received with {kind}"] += 1
        if seg.payload > 0 and not seg.syn:
            counts[f"data {side}"] += 1
            # a mapping comes in a DSS, or for the first data in MP_CAPABLE (RFC 8684 §3.1)
            if seg.subtypes & {"DSS", "MP_CAPABLE"}:
                counts[f"data {side} with a mapping"] += 1
    return WireEvidence(dict(sorted(counts.items())), _statements(counts))


def _statements(c: Counter[str]) -> list[str]:
    out = []
    if c["MP_CAPABLE SYN sent"]:
        answered = c["SYN/ACK received on MP_CAPABLE subflow"]
        with_option = c["SYN/ACK received with MP_CAPABLE"]
        if answered and not with_option:
            out.append("wire: SYN sent with MP_CAPABLE, SYN/ACK arrived without it (plain TCP)")
        elif with_option:
            out.append("wire: MP_CAPABLE in the SYN and in the SYN/ACK")
        else:
            out.append(f"wire: {c['MP_CAPABLE SYN sent']} MP_CAPABLE SYN(s) sent, no SYN/ACK received")
    elif c["SYN sent"]:
        out.append("wire: the client's SYN carried no MP_CAPABLE")
    if c["MP_JOIN SYN sent"]:
        out.append(f"wire: {c['MP_JOIN SYN sent']} MP_JOIN SYN(s) sent, "
                   f"{c['SYN/ACK received with MP_JOIN']} SYN/ACK(s) with MP_JOIN received, "
                   f"{c['SYN/ACK received on MP_JOIN subflow'] - c['SYN/ACK received with MP_JOIN']} without")
    for side in ("sent", "received"):
        data, mapped = c[f"data {side}"], c[f"data {side} with a mapping"]
        if data and mapped < data:
            out.append(f"wire: {data - mapped} of {data} data segments {side} "
                       "without a DSS mapping")
    for side in ("sent", "received"):
        for name in ("MP_FAIL", "MP_FASTCLOSE", "MP_TCPRST", "RST"):
            if c[f"{side} {name}"]:
                out.append(f"wire: {c[f'{side} {name}']} {name} {side} by the client")
    return out


def disagreements(outcome: str, counts: dict[str, int]) -> list[str]:
    """Where the wire contradicts an outcome class: the classifier (testbed.outcome) works from
    counters and endpoint reports, which a stack may not fill in; the capture is independent.
    Only contradictions the client's own view proves are listed."""
    found = []
    joins, accepted = counts.get("MP_JOIN SYN sent", 0), counts.get("SYN/ACK received with MP_JOIN", 0)
    if outcome == "mptcp" and joins > accepted:
        found.append(f"outcome mptcp, but on the wire {joins - accepted} of {joins} MP_JOIN SYN(s) got no "
                     "MP_JOIN SYN/ACK (a refused join: subflow-rejected?)")
    negotiated = (counts.get("MP_CAPABLE SYN sent", 0) and counts.get("SYN/ACK received with MP_CAPABLE", 0)
                  and counts.get("MP_CAPABLE ACK sent", 0))
    if outcome == "fallback-syn" and negotiated:
        found.append("outcome fallback-syn, but on the wire MP_CAPABLE was in the SYN, the SYN/ACK and the "
                     "client's third ACK (negotiated, then fallen back: fallback-infinite-map?)")
    return found


def read_capture(pcap: Path, server_port: int, *, tshark: str | None = None) -> list[Segment]:
    program = tshark or shutil.which("tshark")
    if program is None:
        raise TestbedError("tshark is not installed: cannot read the capture (apt-get install tshark)")
    command = [program, "-n", "-r", str(pcap), "-Y", f"tcp.port == {server_port}", "-T", "fields",
               "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=;"]
    for name in FIELDS:
        command += ["-e", name]
    done = run_command(command, what=f"tshark could not read {pcap}", timeout_s=TSHARK_TIMEOUT_S)
    return parse_tshark_fields(done.stdout, server_port)


def wire_evidence(run_dir: Path, result: dict[str, Any]) -> dict[str, Any] | None:
    """wire.json content for a run directory with a capture, None without one; a capture
    tshark cannot read is a TestbedError."""
    pcap = run_dir / CAPTURE_FILE
    if not pcap.exists():
        return None
    port = int(((result.get("spec") or {}).get("traffic") or {}).get("port", 5201))
    evidence = summarize_segments(read_capture(pcap, port))
    return evidence.as_dict(f"{CAPTURE_FILE} (client host, every interface)")


def load_wire(run_dir: Path) -> dict[str, Any] | None:
    """A stored wire.json, None when the run had no capture (or it was never analysed)."""
    import json

    path = run_dir / WIRE_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TestbedError(f"cannot read {path}: {exc}") from exc


def write_wire(run_dir: Path, result: dict[str, Any]) -> dict[str, Any] | None:
    """Analyse the capture of a run and store wire.json beside it; None without a capture."""
    import json

    from testbed.report.files import write_text_atomic

    evidence = wire_evidence(run_dir, result)
    if evidence is not None:
        write_text_atomic(run_dir / WIRE_FILE, json.dumps(evidence, indent=2) + "\n")
    return evidence
