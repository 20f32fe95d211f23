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


def bin_samples(samples_csv: Path, bin_s: float = BIN_S) -> list[dict[str, Any]]:
    """Turn cumulative per-subflow samples into per-bin throughput rows.

    Input rows: t_s, subflow, local, remote, bytes_sent, bytes_received, bytes_acked (cumulative,
    from testbed.endpoints). The sender's bytes_acked is the goodput it achieved on that subflow;
    on the receiving side bytes_received is used.
    """
    per_subflow: dict[tuple[str, str, str], list[tuple[float, int]]] = defaultdict(list)
    with samples_csv.open() as handle:
        for row in csv.DictReader(handle):
            acked = int(row.get("bytes_acked") or 0)
            received = int(row.get("bytes_received") or 0)
            per_subflow[(row["subflow"], row["local"], row["remote"])].append(
                (float(row["t_s"]), max(acked, received))
            )
    rows: list[dict[str, Any]] = []
    for (subflow, local, remote), points in sorted(per_subflow.items()):
        points.sort()
        # cumulative bytes at each bin edge, by holding the last sample before the edge
        last_t = points[-1][0]
        nbins = int(last_t / bin_s) + 1
        index = 0
        previous = 0
        current = 0
        for b in range(nbins):
            edge = (b + 1) * bin_s
            while index < len(points) and points[index][0] <= edge + 1e-9:
                current = points[index][1]
                index += 1
            delta = current - previous
            previous = current
            rows.append({"t_s": round(b * bin_s, 3), "subflow": subflow, "local": local,
                         "remote": remote, "bytes": delta,
                         "mbps": round(delta * 8 / bin_s / 1e6, 3)})
    rows.sort(key=lambda r: (r["t_s"], r["subflow"]))
    return rows


def write_timeseries(path: Path, rows: list[dict[str, Any]]) -> None:
    try:
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, ["t_s", "subflow", "local", "remote", "bytes", "mbps"],
                                    lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    except OSError as exc:
        raise TestbedError(f"could not write {path}: {exc.strerror}") from exc
