"""What a run of request/response traffic adds to its result: latency percentiles, the
bytes sent on the wire per payload byte, a CSV of every request, and the request stream's
integrity (the oracle of testbed.integrity_run judges the responses only)."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path
from typing import Any

from testbed.endpoints.report import ConnectionRecord
from testbed.endpoints.request_response import latency_summary
from testbed.errors import TestbedError
from testbed.integrity import Verdict

LATENCY_FILE = "latency.csv"


def is_request_response(record: ConnectionRecord) -> bool:
    return record.client.mode == "requests"


def latency_fields(record: ConnectionRecord, requests: int | None) -> dict[str, Any]:
    """result.json's `latency` of one connection: the client's percentiles (ms), how many of
    the requests were answered, and the payload and wire bytes of both directions (wire:
    every subflow's bytes sent by both ends, retransmissions and redundant copies included)."""
    client, server = record.client, record.server
    payload = (client.requests_bytes or 0) + server.bytes
    wire = sum(s.bytes_sent for s in (*client.subflows, *server.subflows))
    return {
        **latency_summary(client.latencies_ms),
        "requests": requests,
        "payload_bytes": payload,
        "wire_bytes_sent": wire,
        "wire_per_payload_byte": round(wire / payload, 4) if payload else None,
        "file": LATENCY_FILE,
    }


def write_latency_csv(path: Path, record: ConnectionRecord) -> None:
    """One row per answered request: index, when it was sent (s after the first), latency."""
    client = record.client
    try:
        with path.open("w", newline="", encoding="ascii") as handle:
            writer = csv.writer(handle)
            writer.writerow(["request", "sent_s", "latency_ms"])
            for index, (sent, latency) in enumerate(zip(client.request_sent_s, client.latencies_ms,
                                                        strict=True)):
                writer.writerow([index, f"{sent:.6f}", f"{latency:.3f}"])
    except OSError as exc:
        raise TestbedError(f"{path}: cannot write the latency file: {exc.strerror}") from exc


def read_latency_csv(path: Path) -> list[tuple[float, float]]:
    """(sent_s, latency_ms) per request, from a latency.csv."""
    try:
        with path.open(newline="", encoding="ascii") as handle:
            return [(float(row["sent_s"]), float(row["latency_ms"])) for row in csv.DictReader(handle)]
    except FileNotFoundError:
        raise TestbedError(f"{path}: missing; the run did not produce request/response data") from None
    except (OSError, KeyError, ValueError) as exc:
        raise TestbedError(f"{path}: unreadable latency file ({exc})") from None


def with_request_stream(record: ConnectionRecord, verdict: Verdict) -> Verdict:
    """The verdict on the responses, downgraded when the requests did not arrive intact."""
    client, server = record.client, record.server
    if (client.requests_bytes, client.requests_sha256) == (server.requests_bytes, server.requests_sha256):
        return verdict
    sent, got = client.requests_bytes or 0, server.requests_bytes or 0
    kind = "truncated" if got < sent else "corrupted"
    if verdict.integrity not in ("ok", "alg-edited"):
        kind = verdict.integrity
    return replace(verdict, integrity=kind,
                   description=f"request stream: the client sent {sent:,} bytes, the server got "
                               f"{got:,} with a different SHA-256; responses: {verdict.description}")
