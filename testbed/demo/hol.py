"""Why loss on one path slows the other: the receiver's side of head-of-line blocking, measured.

An MPTCP receiver keeps one receive buffer for all subflows and advertises one window at the
data level (RFC 8684 3.3.5). A segment lost on path a leaves a hole at the data level: what path
b delivers after it waits in the receiver's out-of-order queue until a's retransmission arrives.
With a bounded buffer that queue fills, the advertised window closes, and path b, clean as it
is, has nothing it may send. This module reads that from a run's own capture (taken on the
client, so the receiver's view when the transfer is a download): per bin, the data-level
out-of-order backlog (highest data sequence received minus the data ACK) and the smallest
window the receiver advertised. The sender's retransmissions come from the live telemetry
(timeseries.csv, `retrans_segments`).

Everything is re-derivable: the series goes to hol_cause.csv, which the plot reads.
"""

from __future__ import annotations

import csv
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.analyze.capture import open_capture
from testbed.analyze.datalevel import expand
from testbed.demo.phases import row_path
from testbed.errors import TestbedError
from testbed.wire import Dss, WireError
from testbed.wire.dss_peek import timestamps_then_dss
from testbed.wire.tcp_options import decode_options_at
from testbed.wire.types import WindowScale

CAUSE_FILE = "hol_cause.csv"
CAUSE_COLUMNS = ("t_s", "backlog_bytes", "max_backlog_bytes", "window_bytes", "min_window_bytes",
                 "zero_windows", "rto_paths")
# a data segment sent again after this much silence on its subflow was sent by a retransmission
# timer (Linux's minimum RTO is 200 ms; fast retransmits and tail-loss probes come sooner)
RTO_GAP_S = 0.2
_TCP = struct.Struct("!HHIIBBH")
_SYN, _ACK = 0x02, 0x10
_MOD32 = 1 << 32


@dataclass
class _Bin:
    backlog: int = 0
    max_backlog: int = 0
    window: int | None = None
    min_window: int | None = None
    zero_windows: int = 0
    rto_paths: tuple[str, ...] = ()


def receiver_addresses(topology: dict[str, Any], host: str) -> set[str]:
    """The addresses of `host` in a result's topology description."""
    found = set()
    for link in topology["links"]:
        for end, address in ((link["a"], link.get("a_address")), (link["b"], link.get("b_address"))):
            if end == host and address:
                found.add(address.split("/")[0])
    return found


def cause_series(capture: Path, receiver: set[str], bin_s: float,
                 paths: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Per bin from the first packet (the client's SYN): the receiver's data-level backlog, the
    window it advertised, and the paths (`paths`: client address -> link name) on which a
    segment came again after RTO_GAP_S of silence on its subflow. Bins without a receiver packet
    repeat the last backlog and window."""
    paths = paths or {}
    if not receiver:
        raise TestbedError(f"{capture}: no receiver address to read the window from")
    scales: dict[bytes, int] = {}  # direction key (src, dst, ports) -> window shift it announced
    isns: dict[bytes, int] = {}
    bins: dict[int, _Bin] = {}
    highest: dict[bytes, int] = {}  # direction key -> end of the highest subflow sequence seen
    last_data: dict[bytes, float] = {}
    first: float | None = None
    data_ack: int | None = None
    high: int | None = None
    for ts, frame, offset, version in open_capture(capture):
        if version != 4 or len(frame) < offset + 40 or frame[offset + 9] != 6:
            continue
        if first is None:
            first = ts
        ihl = (frame[offset] & 0x0F) * 4
        tcp = offset + ihl
        if len(frame) < tcp + 20:
            continue
        _, _, seq, _, offset_byte, flags, window = _TCP.unpack_from(frame, tcp)
        header = (offset_byte >> 4) * 4
        length = ((frame[offset + 2] << 8) | frame[offset + 3]) - ihl - header
        key = frame[offset + 12:offset + 20] + frame[tcp:tcp + 4]
        dss = _dss(frame, tcp + 20, min(tcp + header, len(frame)))
        if flags & _SYN:
            isns[key] = seq
            scales[key] = _window_shift(frame, tcp + 20, min(tcp + header, len(frame)))
            continue
        from_receiver = ".".join(str(b) for b in frame[offset + 12:offset + 16]) in receiver
        index = int((ts - first) / bin_s)
        if from_receiver:
            if dss and dss[0] is not None:
                data_ack = dss[0] if data_ack is None else expand(dss[0], dss[1], data_ack)
            advertised = window << scales.get(key, 0)
            current = bins.setdefault(index, _Bin())
            current.window = advertised
            current.min_window = advertised if current.min_window is None else min(current.min_window,
                                                                                   advertised)
            current.zero_windows += advertised == 0
        elif length > 0 and key in isns:
            seq_end = (seq - isns[key]) % _MOD32 + length
            if seq_end <= highest.get(key, 0) and ts - last_data.get(key, ts) >= RTO_GAP_S:
                current = bins.setdefault(index, _Bin())
                ends = (".".join(str(b) for b in frame[offset + 12:offset + 16]),
                        ".".join(str(b) for b in frame[offset + 16:offset + 20]))
                path = next((paths[a] for a in ends if a in paths), ends[1])
                if path not in current.rto_paths:
                    current.rto_paths += (path,)
            highest[key] = max(highest.get(key, 0), seq_end)
            last_data[key] = ts
        if not from_receiver and length > 0 and dss and dss[2] is not None and key in isns:
            dsn = dss[2] if high is None else expand(dss[2], dss[3], high)
            relative = (seq - isns[key] - dss[4]) % _MOD32  # offset of this segment in its mapping
            end = dsn + min(relative + length, dss[5])
            high = end if high is None else max(high, end)
        if data_ack is not None and high is not None:
            current = bins.setdefault(index, _Bin())
            current.backlog = max(0, high - data_ack)
            current.max_backlog = max(current.max_backlog, current.backlog)
    return _rows(bins, bin_s)


def _rows(bins: dict[int, _Bin], bin_s: float) -> list[dict[str, Any]]:
    rows = []
    last = _Bin()
    for index in range(max(bins, default=-1) + 1):
        current = bins.get(index)
        if current is None:
            current = _Bin(last.backlog, last.backlog, last.window, last.window)
        if current.window is None:
            current.window, current.min_window = last.window, last.window
        rows.append({"t_s": round(index * bin_s, 3), "backlog_bytes": current.backlog,
                     "max_backlog_bytes": current.max_backlog,
                     "window_bytes": "" if current.window is None else current.window,
                     "min_window_bytes": "" if current.min_window is None else current.min_window,
                     "zero_windows": current.zero_windows, "rto_paths": ";".join(current.rto_paths)})
        last = current
    return rows


def _dss(frame: bytes, start: int, end: int) -> tuple | None:
    """(data_ack, ack64, dsn, dsn64, subflow_seq, data_len, ...) of the segment's DSS, if any."""
    if end <= start:
        return None
    peeked = timestamps_then_dss(frame, start, end)
    if peeked is not None:
        return peeked or None
    try:
        options = decode_options_at(frame, start, end)
    except WireError:
        return None  # a malformed option: this segment tells us nothing
    for option in options:
        if isinstance(option, Dss):
            return (option.data_ack, option.data_ack_64, option.dsn, option.dsn_64, option.subflow_seq,
                    option.data_len, option.checksum, option.data_fin)
    return None


def _window_shift(frame: bytes, start: int, end: int) -> int:
    try:
        options = decode_options_at(frame, start, end) if end > start else []
    except WireError:
        return 0
    return next((option.shift for option in options if isinstance(option, WindowScale)), 0)


def write_cause(path: Path, rows: list[dict[str, Any]]) -> None:
    try:
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CAUSE_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    except OSError as exc:
        raise TestbedError(f"could not write {path}: {exc.strerror}") from exc


def read_cause(path: Path) -> list[dict[str, Any]]:
    try:
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))
    except OSError as exc:
        raise TestbedError(f"cannot read {path}: {exc.strerror}") from exc


def retransmission_events(rows: Iterable[dict[str, Any]], paths: dict[str, str],
                          path: str) -> list[tuple[float, int]]:
    """(bin start, segments retransmitted in it) on `path`, from the sender's cumulative
    `retrans_segments` telemetry column (empty cells skipped)."""
    last: dict[str, int] = {}
    events = []
    for row in sorted(rows, key=lambda r: float(r["t_s"])):
        value = row.get("retrans_segments", "")
        if value in ("", None) or row_path(row, paths) != path:
            continue
        count = int(float(value))
        subflow = str(row["local"])
        if count > last.get(subflow, 0):
            events.append((float(row["t_s"]), count - last.get(subflow, 0)))
        last[subflow] = max(count, last.get(subflow, 0))
    return events


def window_stats(rows: list[dict[str, Any]], window: tuple[float, float]) -> dict[str, float]:
    """The cause over a phase's check window: the median (of the bins' last values) and the
    largest backlog, the smallest advertised window (KiB), and the seconds in which the receiver
    advertised a zero window."""
    start, end = window
    inside = [r for r in rows if start - 1e-9 <= float(r["t_s"]) < end - 1e-9]
    backlogs = [int(r["max_backlog_bytes"]) for r in inside]
    windows = [int(r["min_window_bytes"]) for r in inside if r["min_window_bytes"] not in ("", None)]
    bin_s = float(rows[1]["t_s"]) - float(rows[0]["t_s"]) if len(rows) > 1 else 0.1
    ends = sorted(int(r["backlog_bytes"]) for r in inside)
    return {"median_backlog_kib": round(ends[len(ends) // 2] / 1024, 1) if ends else 0.0,
            "max_backlog_kib": round(max(backlogs, default=0) / 1024, 1),
            "min_window_kib": round(min(windows, default=0) / 1024, 1),
            "zero_window_s": round(sum(1 for r in inside if int(r["zero_windows"]) > 0) * bin_s, 2)}


def rto_times(rows: list[dict[str, Any]], path: str) -> list[float]:
    """Bin starts in which `path` had a retransmission after a silence (an RTO, see RTO_GAP_S)."""
    return [float(r["t_s"]) for r in rows if path in str(r.get("rto_paths") or "").split(";")]
