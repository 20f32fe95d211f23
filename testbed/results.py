"""Writing a run's files: JSON written atomically, and per-subflow time series as CSV.

The result document itself (its typed form, schema and upgrades) is testbed.result. Unlike
Flent, a failed write is an error, never a log line: results are never lost silently.
"""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from testbed.errors import TestbedError

TIMESERIES_FILE = "timeseries.csv"
BIN_S = 0.1


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temporary file and rename, so a reader never sees half a file."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        temporary.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
        os.replace(temporary, path)
    except OSError as exc:
        raise TestbedError(f"could not write {path}: {exc.strerror}") from exc


# Telemetry per bin: gauges are the mean of the samples taken inside the bin (empty when
# the bin holds none, or the source had no value); retransmissions are cumulative, so a bin
# holds the last count at or before its end.
MEAN_COLUMNS = ("cwnd_segments", "cwnd_bytes", "srtt_ms", "in_flight_bytes", "delivery_rate_mbps")
LAST_COLUMNS = ("retrans_segments",)
TIMESERIES_COLUMNS = ("t_s", "subflow", "local", "remote", "bytes", "mbps", *MEAN_COLUMNS, *LAST_COLUMNS)
TIMESERIES_UNITS = {"t_s": "s", "bytes": "B", "mbps": "Mbit/s", "cwnd_segments": "segments",
                    "cwnd_bytes": "B", "srtt_ms": "ms", "in_flight_bytes": "B",
                    "delivery_rate_mbps": "Mbit/s", "retrans_segments": "segments (cumulative)"}


def timeseries_meta(bin_s: float = BIN_S) -> dict[str, Any]:
    """result.json's description of timeseries.csv."""
    return {"file": TIMESERIES_FILE, "bin_s": bin_s, "columns": list(TIMESERIES_COLUMNS),
            "units": dict(TIMESERIES_UNITS),
            "binning": {"mean": list(MEAN_COLUMNS), "last": list(LAST_COLUMNS)}}


def _number(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _format(value: float | None, column: str) -> object:
    if value is None:
        return ""
    if column in ("srtt_ms", "delivery_rate_mbps"):
        return round(value, 3)
    return round(value, 1) if value != int(value) else int(value)


def bin_samples(samples_csv: Path, bin_s: float = BIN_S) -> list[dict[str, Any]]:
    """Turn cumulative per-subflow samples into per-bin throughput and telemetry rows.

    Input rows: t_s, subflow, local, remote, bytes_sent, bytes_received, bytes_acked (cumulative,
    from testbed.endpoints), then the telemetry columns (maybe absent or empty). The sender's
    bytes_acked is the goodput it achieved on that subflow; on the receiving side
    bytes_received is used.
    """
    telemetry = (*MEAN_COLUMNS, *LAST_COLUMNS)
    per_subflow: dict[tuple[str, str, str], list[tuple[float, int, tuple[float | None, ...]]]] = \
        defaultdict(list)
    with samples_csv.open() as handle:
        for row in csv.DictReader(handle):
            acked = int(row.get("bytes_acked") or 0)
            received = int(row.get("bytes_received") or 0)
            values = tuple(_number(row.get(column)) for column in telemetry)
            per_subflow[(row["subflow"], row["local"], row["remote"])].append(
                (float(row["t_s"]), max(acked, received), values)
            )
    rows: list[dict[str, Any]] = []
    for (subflow, local, remote), points in sorted(per_subflow.items()):
        points.sort(key=lambda p: p[0])
        # cumulative bytes at each bin edge, by holding the last sample before the edge
        last_t = points[-1][0]
        nbins = int(last_t / bin_s) + 1
        index = 0
        previous = 0
        current = 0
        last_values: dict[str, float | None] = dict.fromkeys(LAST_COLUMNS)
        for b in range(nbins):
            edge = (b + 1) * bin_s
            inside: list[tuple[float | None, ...]] = []
            while index < len(points) and points[index][0] <= edge + 1e-9:
                current = points[index][1]
                inside.append(points[index][2])
                index += 1
            delta = current - previous
            previous = current
            row: dict[str, Any] = {"t_s": round(b * bin_s, 3), "subflow": subflow, "local": local,
                                   "remote": remote, "bytes": delta,
                                   "mbps": round(delta * 8 / bin_s / 1e6, 3)}
            for position, column in enumerate(telemetry):
                present = [v[position] for v in inside if v[position] is not None]
                if column in LAST_COLUMNS:
                    if present:
                        last_values[column] = present[-1]
                    row[column] = _format(last_values[column], column)
                else:
                    row[column] = _format(sum(present) / len(present) if present else None, column)
            rows.append(row)
    rows.sort(key=lambda r: (r["t_s"], r["subflow"]))
    return rows


def write_timeseries(path: Path, rows: list[dict[str, Any]]) -> None:
    try:
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, list(TIMESERIES_COLUMNS), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    except OSError as exc:
        raise TestbedError(f"could not write {path}: {exc.strerror}") from exc
