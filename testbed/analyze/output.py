"""What an analysis writes: analysis.json (versioned), one CSV per series, and the text summary.

analysis.json follows result.json's model (testbed/result.py): `schema` and `kind` first, then
the capture, the connections, the subflows, the timeline and the names of the series files, so
every plot can be drawn again from the files alone (testbed.analyze.plots reads only these).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from testbed.analyze.analyzer import Analysis
from testbed.analyze.capture import CaptureReader
from testbed.analyze.subflow import B_ACKED, B_FLIGHT, B_RETRANS, B_RTT_N, B_RTT_SUM, B_SENT
from testbed.report.files import WriteFailed, write_text_atomic

SCHEMA = 1
KIND = "capture-analysis"
ANALYSIS_FILE = "analysis.json"
SUBFLOW_SERIES = "subflow_series.csv"
DSN_SERIES = "dsn_series.csv"
DATA_ACK_SERIES = "data_ack_series.csv"
OFO_CDF = "ofo_cdf.csv"
REINJECTIONS = "reinjections.csv"


def _csv(rows: list[list[Any]], header: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def subflow_rows(analysis: Analysis) -> list[list[Any]]:
    """Per subflow, direction and bin: goodput from the ACKs, bytes sent, retransmitted, the
    largest flight and the mean RTT of the bin."""
    rows = []
    bin_s = analysis.bin_s
    for subflow in analysis.subflows:
        for side, direction in enumerate(subflow.dirs):
            if not direction.bins:
                continue
            previous_acked = None
            for index in sorted(direction.bins):
                entry = direction.bins[index]
                acked = max(0, min(entry[B_ACKED] - 1, direction.bytes_acked))
                if previous_acked is None:
                    previous_acked = 0
                goodput = max(0, acked - previous_acked)
                previous_acked = max(previous_acked, acked)
                rtt = entry[B_RTT_SUM] / entry[B_RTT_N] if entry[B_RTT_N] else None
                rows.append([round(index * bin_s, 6), subflow.index, side,
                             subflow.endpoint(side),
                             int(entry[B_SENT]), int(entry[B_RETRANS]), goodput,
                             round(8 * goodput / bin_s / 1e6, 6), int(entry[B_FLIGHT]),
                             "" if rtt is None else round(1000 * rtt, 3)])
    return rows


def dsn_rows(analysis: Analysis) -> tuple[list[list[Any]], list[list[Any]], list[list[Any]]]:
    """DSN ranges sent per bin and subflow, data ACKs per bin, and the OFO-delay CDFs."""
    dsn, acks, cdf = [], [], []
    bin_s = analysis.bin_s
    for connection in analysis.connections:
        for side, data in enumerate(connection.data):
            sender = "client" if side == 0 else "server"
            for (index, subflow), (low, high) in sorted(data.dsn_bins.items()):
                dsn.append([round(index * bin_s, 6), connection.index, sender, subflow, low, high])
            for index, ack in sorted(data.ack_bins.items()):  # the value at the bin's end
                acks.append([round((index + 1) * bin_s, 6), connection.index, sender, ack])
            for delay_ms, fraction in data.ofo_cdf():
                cdf.append([connection.index, sender, delay_ms, round(fraction, 6)])
    return dsn, acks, cdf


def document(analysis: Analysis, reader: CaptureReader, notes: list[str]) -> dict[str, Any]:
    start = analysis.first_ts or 0.0
    end = analysis.last_ts
    return {
        "schema": SCHEMA,
        "kind": KIND,
        "capture": {
            "file": str(reader.path),
            "format": reader.form,
            "link_types": sorted(reader.linktypes),
            "snaplen": reader.snaplen,
            "packets": reader.packets,
            "non_ip": reader.non_ip,
            "truncated": reader.truncated,
            "start_epoch_s": start,
            "duration_s": round(end - start, 6),
            "tcp_packets": analysis.tcp_packets,
            "counts": analysis.counts,
            "malformed_examples": analysis.malformed_examples,
        },
        "bin_s": analysis.bin_s,
        "notes": notes,
        "connections": [c.summary() for c in analysis.connections],
        "subflows": [dict(s.summary(start, end, analysis.timeout_s),
                          connection=s.connection.index if s.connection is not None else None,
                          join=_join_summary(s.join))
                     for s in analysis.subflows],
        "timeline": analysis.timeline,
        "timeline_dropped": analysis.timeline_dropped,
        "series": {"subflow": SUBFLOW_SERIES, "dsn": DSN_SERIES, "data_ack": DATA_ACK_SERIES,
                   "ofo_cdf": OFO_CDF, "reinjections": REINJECTIONS},
    }


def _join_summary(join: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in join.items():
        if isinstance(value, bytes):
            out[key] = value.hex()
        elif isinstance(value, int) and not isinstance(value, bool) and key != "unmatched_token":
            out[key] = f"0x{value:x}"
        else:
            out[key] = value
    return out


def write_outputs(analysis: Analysis, reader: CaptureReader, directory: Path,
                  notes: list[str]) -> dict[str, Any]:
    """Write analysis.json and the CSVs into directory; returns the document."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteFailed(f"cannot create the output directory {directory}: "
                          f"{exc.strerror or exc}") from exc
    doc = document(analysis, reader, notes)
    write_text_atomic(directory / SUBFLOW_SERIES, _csv(subflow_rows(analysis), [
        "t_s", "subflow", "side", "sender", "bytes_new", "bytes_retrans", "bytes_acked",
        "goodput_mbps", "flight_bytes", "rtt_ms"]))
    dsn, acks, cdf = dsn_rows(analysis)
    write_text_atomic(directory / DSN_SERIES, _csv(dsn, ["t_s", "connection", "sender", "subflow",
                                                         "dsn_low", "dsn_high"]))
    write_text_atomic(directory / DATA_ACK_SERIES, _csv(acks, ["t_s", "connection", "sender",
                                                               "data_ack"]))
    write_text_atomic(directory / OFO_CDF, _csv(cdf, ["connection", "sender", "delay_ms",
                                                      "fraction_of_bytes"]))
    start = analysis.first_ts or 0.0
    reinjections = [[round(r["t"] - start, 6), c.index, "client" if side == 0 else "server",
                     r["subflow"], r["dsn"], r["length"], r["repeated_bytes"]]
                    for c in analysis.connections for side, d in enumerate(c.data)
                    for r in d.reinjections]
    write_text_atomic(directory / REINJECTIONS, _csv(reinjections, [
        "t_s", "connection", "sender", "subflow", "dsn", "length", "repeated_bytes"]))
    write_text_atomic(directory / ANALYSIS_FILE, json.dumps(doc, indent=1) + "\n")
    return doc


def text_summary(doc: dict[str, Any]) -> str:
    """A few lines per connection for stdout."""
    capture = doc["capture"]
    lines = [f"{capture['file']}: {capture['format']}, {', '.join(capture['link_types'])}, "
             f"{capture['packets']} packets over {capture['duration_s']:.3f} s, "
             f"{len(doc['connections'])} MPTCP connection(s), {len(doc['subflows'])} TCP connection(s)"]
    subflows = {s["index"]: s for s in doc["subflows"]}
    for connection in doc["connections"]:
        lines.append(f"connection {connection['index']} (MPTCP v{connection['mptcp_version']}): "
                     f"{connection['client']} -> {connection['server']}, "
                     f"{len(connection['subflows'])} subflow(s)"
                     + (f", fallback: {connection['fallback']}" if connection["fallback"] else ""))
        for data in connection["data"]:
            if data["bytes"] or data["data_acked"]:
                lines.append(f"  data from {data['from']}: {data['data_acked']} bytes acked at the "
                             f"data level, {data['reinjected_bytes']} reinjected, "
                             f"{data['ofo_bytes_delayed']} delayed out of order")
        for index in connection["subflows"]:
            sub = subflows[index]
            sent = max(sub["directions"], key=lambda d: d["bytes_sent"])
            rtt = f", RTT {sent['rtt_ms_mean']} ms" if sent["rtt_ms_mean"] is not None else ""
            lines.append(f"  subflow {index} {sub['role']}: {sub['client']} -> {sub['server']}"
                         f"{' backup' if any(sub['backup']) else ''}: {sent['bytes_acked']} bytes "
                         f"acked from {sent['from']}, {sent['bytes_retrans']} retransmitted{rtt}; "
                         f"ended by {sub['ended_by']}")
        if connection["violations"]:
            lines.append("  violations: " + ", ".join(f"{k} x{v}" for k, v in
                                                       connection["violations"].items()))
    for note in doc["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)
