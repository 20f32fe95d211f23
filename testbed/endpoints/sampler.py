"""Periodic sampling of per-subflow counters during a transfer.

The kernel forgets a subflow as soon as it closes, so the final getsockopt of a connection
may list fewer subflows than carried data (a path went down, REMOVE_ADDR, a reset
subflow). ``SubflowTracker`` keeps the last totals seen for every subflow; it is pure (fed
observations and times). ``SocketSampler`` is the thread that feeds it from a socket every
few tens of milliseconds; its getsockopt calls release the GIL, so it does not slow the
transfer loop that runs in the main thread.
"""

from __future__ import annotations

import csv
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from testbed.endpoints.kernel_info import (
    KernelInfoError,
    MptcpInfo,
    SubflowSnapshot,
    TcpCounters,
    counters_are_void,
    read_mptcp_info,
    read_mptcp_subflows,
    read_tcp_subflow,
)
from testbed.endpoints.report import SubflowReport

# Per-subflow telemetry in the same units for both stacks; an empty cell is a value the
# source does not have (an older kernel's shorter tcp_info, no RTT measured yet).
TELEMETRY_COLUMNS = (
    "cwnd_segments",
    "cwnd_bytes",
    "srtt_ms",
    "in_flight_bytes",
    "delivery_rate_mbps",
    "retrans_segments",  # cumulative (tcpi_total_retrans)
)

TIMESERIES_COLUMNS = (
    "t_s",
    "subflow",
    "local",
    "remote",
    "bytes_sent",
    "bytes_received",
    "bytes_acked",
    *TELEMETRY_COLUMNS,
)


def _blank(value: object) -> object:
    return "" if value is None else value


def telemetry_cells(counters: TcpCounters) -> tuple[object, ...]:
    """The TELEMETRY_COLUMNS of one subflow's counters."""
    rate = counters.delivery_rate_bps
    return (
        counters.snd_cwnd,
        _blank(counters.cwnd_bytes),
        f"{counters.rtt_us / 1000:.3f}" if counters.rtt_us > 0 else "",
        _blank(counters.in_flight_bytes),
        "" if rate is None else f"{rate * 8 / 1e6:.3f}",
        counters.total_retrans,
    )


@dataclass(frozen=True)
class Observation:
    """What one sampling instant saw on a socket."""

    mptcp_info: MptcpInfo | None  # None: plain TCP, or an MPTCP socket that fell back
    subflows: list[SubflowSnapshot]


@dataclass
class _TrackedSubflow:
    index: int
    local: str
    remote: str
    first_seen_s: float
    last_seen_s: float
    counters: TcpCounters


def _regressed(old: TcpCounters, new: TcpCounters) -> bool:
    """Counters went backwards: the same address pair now names a new subflow."""
    pairs = (
        (old.bytes_sent, new.bytes_sent),
        (old.bytes_acked, new.bytes_acked),
        (old.bytes_received, new.bytes_received),
    )
    return any(a is not None and b is not None and b < a for a, b in pairs)


class SubflowTracker:
    """Last-seen totals per subflow across samples, numbered in order of appearance."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], _TrackedSubflow] = {}
        self._retired: list[_TrackedSubflow] = []
        self._next_index = 0
        self._last_sample_s: float | None = None
        self.last_mptcp_info: MptcpInfo | None = None
        self.mptcp_at_end = False  # the latest sample still answered MPTCP_INFO
        self.mptcp_seen = False  # some sample answered MPTCP_INFO (fallback came later)
        self.samples = 0

    def observe(self, t_s: float, observation: Observation) -> list[tuple[object, ...]]:
        """Record one sample taken at ``t_s``; returns its time-series rows."""
        self.samples += 1
        self._last_sample_s = t_s
        self.mptcp_at_end = observation.mptcp_info is not None
        if observation.mptcp_info is not None:
            self.mptcp_seen = True
            self.last_mptcp_info = observation.mptcp_info
        rows: list[tuple[object, ...]] = []
        for snapshot in observation.subflows:
            if counters_are_void(snapshot.counters):
                continue
            key = (snapshot.local, snapshot.remote)
            tracked = self._by_key.get(key)
            if tracked is not None and _regressed(tracked.counters, snapshot.counters):
                self._retired.append(tracked)
                tracked = None
            if tracked is None:
                tracked = _TrackedSubflow(
                    index=self._next_index,
                    local=snapshot.local,
                    remote=snapshot.remote,
                    first_seen_s=t_s,
                    last_seen_s=t_s,
                    counters=snapshot.counters,
                )
                self._by_key[key] = tracked
                self._next_index += 1
            tracked.last_seen_s = t_s
            tracked.counters = snapshot.counters
            counters = snapshot.counters
            rows.append(
                (
                    f"{t_s:.4f}",
                    tracked.index,
                    tracked.local,
                    tracked.remote,
                    counters.bytes_sent or 0,
                    counters.bytes_received or 0,
                    counters.bytes_acked or 0,
                    *telemetry_cells(counters),
                )
            )
        return rows

    def subflow_reports(self) -> list[SubflowReport]:
        """Every subflow ever seen, with its last totals, in order of appearance."""
        tracked = sorted([*self._retired, *self._by_key.values()], key=lambda s: s.index)
        return [
            SubflowReport(
                index=sub.index,
                local=sub.local,
                remote=sub.remote,
                bytes_sent=sub.counters.bytes_sent or 0,
                bytes_acked=sub.counters.bytes_acked or 0,
                bytes_received=sub.counters.bytes_received or 0,
                bytes_retrans=sub.counters.bytes_retrans or 0,
                total_retrans=sub.counters.total_retrans,
                rtt_us=sub.counters.rtt_us,
                first_seen_s=round(sub.first_seen_s, 4),
                last_seen_s=round(sub.last_seen_s, 4),
                open_at_end=sub.last_seen_s == self._last_sample_s,
            )
            for sub in tracked
        ]


def take_observation(sock: socket.socket, mptcp_requested: bool, local: str, remote: str) -> Observation:
    """Read one observation from a connected socket whose addresses are local/remote."""
    if mptcp_requested:
        info = read_mptcp_info(sock)
        if info is not None:
            subflows = read_mptcp_subflows(sock)
            if subflows is not None:
                return Observation(mptcp_info=info, subflows=subflows)
            # Either the connection fell back between the two reads, or the kernel
            # predates MPTCP_TCPINFO (5.16): MPTCP_INFO tells which.
            info = read_mptcp_info(sock)
            if info is not None:
                return Observation(mptcp_info=info, subflows=[])
    return Observation(mptcp_info=None, subflows=[read_tcp_subflow(sock, local, remote)])


class TimeseriesWriter:
    """CSV rows of TIMESERIES_COLUMNS: cumulative byte counters, then per-subflow telemetry."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._writer = csv.writer(stream, lineterminator="\n")
        self._writer.writerow(TIMESERIES_COLUMNS)

    def write(self, rows: list[tuple[object, ...]]) -> None:
        """Write one sample's rows and flush them: the live graph and `ss` comparisons read this
        file while the transfer runs (one small write per sampling interval)."""
        self._writer.writerows(rows)
        self._stream.flush()

    def close(self) -> None:
        self._stream.close()


class SocketSampler:
    """Samples a socket every ``interval_s`` in a thread; ``finish`` takes a last sample.

    Errors while sampling (the peer reset the connection, the socket closed) end the
    sampling quietly: the transfer loop reports connection errors, and the tracker keeps
    everything seen up to then.
    """

    def __init__(
        self,
        sock: socket.socket,
        mptcp_requested: bool,
        addresses: tuple[str, str],
        interval_s: float,
        clock: Callable[[], float],
        origin: float,
        writer: TimeseriesWriter | None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"sampling interval must be > 0 s, got {interval_s}")
        self.tracker = SubflowTracker()
        self._sock = sock
        self._mptcp_requested = mptcp_requested
        self._local, self._remote = addresses
        self._interval_s = interval_s
        self._clock = clock
        self._origin = origin
        self._writer = writer
        self._stop = threading.Event()
        self._lock = threading.Lock()  # sample() runs in the thread and in the caller
        self._thread = threading.Thread(target=self._run, name="subflow-sampler", daemon=True)
        self.last_error: str | None = None

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def sample(self) -> bool:
        """Take one sample now; False if the socket could not be read."""
        try:
            observation = take_observation(self._sock, self._mptcp_requested, self._local, self._remote)
        except (OSError, KernelInfoError) as exc:
            self.last_error = str(exc)
            return False
        rows = self.tracker.observe(self._clock() - self._origin, observation)
        if self._writer is not None:
            self._writer.write(rows)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            if not self.sample():
                return

    def finish(self) -> None:
        """Stop the thread, then take a final sample from the calling thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.sample()
