"""tshark as an independent judge of bytes on the wire: dissect a pcap into flat field lists.

`tshark -T json` repeats keys (an option list has many `tcp.option_kind`), so the JSON is read
with a hook that keeps every value, and each packet is flattened into
`{field name: [values in order]}` regardless of the tree it was nested in.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

# Dissector preferences for judging our codec: verify checksums, absolute sequence numbers,
# MPTCP analysis on (tokens, IDSNs and subflow grouping are computed by Wireshark itself).
JUDGE_PREFERENCES: dict[str, str] = {
    "ip.check_checksum": "TRUE",
    "tcp.check_checksum": "TRUE",
    "tcp.relative_sequence_numbers": "FALSE",
    "mptcp.analyze_mptcp": "TRUE",
    "mptcp.relative_sequence_numbers": "FALSE",
    "mptcp.intersubflows_retransmission": "FALSE",
    "mptcp.analyze_mappings": "FALSE",
}

EXPERT_SEVERITY_ERROR = 0x00800000  # PI_ERROR in epan/proto.h
EXPERT_SEVERITY_WARN = 0x00600000

TsharkPacket = dict[str, list[str]]


def tshark_available() -> bool:
    return shutil.which("tshark") is not None


def _keep_all(pairs: list[tuple[str, Any]]) -> dict[str, list[Any]]:
    merged: dict[str, list[Any]] = {}
    for key, value in pairs:
        merged.setdefault(key, []).append(value)
    return merged


def _flatten(node: Any, out: TsharkPacket) -> None:
    if isinstance(node, dict):
        for key, values in node.items():
            for value in values:
                if isinstance(value, dict):
                    _flatten(value, out)
                elif isinstance(value, list):
                    for item in value:
                        if isinstance(item, dict):
                            _flatten(item, out)
                        else:
                            out.setdefault(key, []).append(str(item))
                else:
                    out.setdefault(key, []).append(str(value))


def dissect(
    pcap: str | Path, preferences: dict[str, str] | None = None, timeout_s: float = 60.0
) -> list[TsharkPacket]:
    """Every packet of `pcap` as {field: [values]}; raises CalledProcessError if tshark fails."""
    command = ["tshark", "-n", "-r", str(pcap), "-T", "json"]
    for name, value in (JUDGE_PREFERENCES if preferences is None else preferences).items():
        command += ["-o", f"{name}:{value}"]
    result = subprocess.run(command, capture_output=True, check=True, timeout=timeout_s)
    packets = json.loads(result.stdout, object_pairs_hook=_keep_all)
    flat: list[TsharkPacket] = []
    for packet in packets:
        fields: TsharkPacket = {}
        _flatten(packet, fields)
        flat.append(fields)
    return flat


FIELD_AGGREGATOR = "\x1e"  # between a field's occurrences: no expert message contains it


def dissect_fields(
    pcap: str | Path, fields: list[str], preferences: dict[str, str] | None = None,
    timeout_s: float = 60.0,
) -> list[TsharkPacket]:
    """Only `fields` of every packet, as {field: [values]} (absent fields left out).

    Several times faster than `dissect` on big captures (tshark writes a few fields instead of the
    whole tree, and no JSON is parsed): for judging a capture of tens of thousands of packets."""
    command = ["tshark", "-n", "-r", str(pcap), "-T", "fields", "-E", "occurrence=a",
               "-E", f"aggregator={FIELD_AGGREGATOR}", "-E", "separator=/t", "-E", "quote=n"]
    for name, value in (JUDGE_PREFERENCES if preferences is None else preferences).items():
        command += ["-o", f"{name}:{value}"]
    for field in fields:
        command += ["-e", field]
    result = subprocess.run(command, capture_output=True, check=True, timeout=timeout_s)
    packets: list[TsharkPacket] = []
    for line in result.stdout.decode("utf-8", "replace").split("\n")[:-1]:  # not splitlines: \x1e is one
        columns = line.split("\t")
        packets.append({field: value.split(FIELD_AGGREGATOR)
                        for field, value in zip(fields, columns, strict=False) if value != ""})
    return packets


def problems(packet: TsharkPacket, min_severity: int = EXPERT_SEVERITY_ERROR) -> list[str]:
    """Malformed markers and expert messages at or above `min_severity` in one packet."""
    found = [f"malformed: {value}" for value in packet.get("_ws.malformed", [])]
    if "_ws.malformed" in packet and not found:
        found.append("malformed")
    severities = packet.get("_ws.expert.severity", [])
    messages = packet.get("_ws.expert.message", [])
    for index, severity in enumerate(severities):
        if int(severity) >= min_severity:
            message = messages[index] if index < len(messages) else "(no message)"
            found.append(f"expert 0x{int(severity):08x}: {message}")
    return found
