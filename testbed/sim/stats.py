"""Per-flow counters and per-subflow byte time series, kept by the network as packets move.

A flow is one direction of one TCP 4-tuple, so each MPTCP subflow shows up as two flows (data
one way, ACKs the other). Bytes are TCP payload bytes handed to the receiving endpoint, binned
by virtual arrival time; the bin width is at most 100 ms so a CLI or a plot can show each
subflow's throughput over time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from testbed.wire.types import FIN, RST, SYN, Packet

MAX_BIN_SECONDS = 0.1


class FlowKey(NamedTuple):
    src: str
    src_port: int
    dst: str
    dst_port: int

    def label(self) -> str:
        return f"{self.src}:{self.src_port}->{self.dst}:{self.dst_port}"


@dataclass(slots=True)
class FlowStats:
    """Counts for one direction of one 4-tuple."""

    packets_sent: int = 0
    payload_bytes_sent: int = 0
    packets_received: int = 0
    payload_bytes_received: int = 0
    syn: int = 0
    fin: int = 0
    rst: int = 0
    first_received: float | None = None
    last_received: float | None = None
    bins: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "packets_sent": self.packets_sent, "payload_bytes_sent": self.payload_bytes_sent,
            "packets_received": self.packets_received,
            "payload_bytes_received": self.payload_bytes_received,
            "syn": self.syn, "fin": self.fin, "rst": self.rst,
            "first_received": self.first_received, "last_received": self.last_received,
        }


class FlowTable:
    """All flows seen by endpoints of one network."""

    def __init__(self, bin_seconds: float = MAX_BIN_SECONDS) -> None:
        if not 0 < bin_seconds <= MAX_BIN_SECONDS:
            raise ValueError(f"bin_seconds must be in (0, {MAX_BIN_SECONDS}], got {bin_seconds}")
        self.bin_seconds = bin_seconds
        self.flows: dict[FlowKey, FlowStats] = {}

    def bin_index(self, now: float) -> int:
        """The bin holding time `now`; the epsilon keeps 0.3 s in bin 3 despite 0.3 / 0.1
        being 2.9999999999999996 in floating point."""
        return int(now / self.bin_seconds + 1e-9)

    def _stats(self, packet: Packet) -> FlowStats:
        segment = packet.tcp
        key = FlowKey(packet.src, segment.src_port, packet.dst, segment.dst_port)
        stats = self.flows.get(key)
        if stats is None:
            stats = self.flows[key] = FlowStats()
        return stats

    def record_sent(self, packet: Packet) -> None:
        stats = self._stats(packet)
        stats.packets_sent += 1
        stats.payload_bytes_sent += len(packet.tcp.payload)
        flags = packet.tcp.flags
        if flags & (SYN | FIN | RST):
            stats.syn += bool(flags & SYN)
            stats.fin += bool(flags & FIN)
            stats.rst += bool(flags & RST)

    def record_received(self, packet: Packet, now: float) -> None:
        stats = self._stats(packet)
        stats.packets_received += 1
        size = len(packet.tcp.payload)
        if stats.first_received is None:
            stats.first_received = now
        stats.last_received = now
        if size:
            stats.payload_bytes_received += size
            index = self.bin_index(now)
            stats.bins[index] = stats.bins.get(index, 0) + size

    def series(self, key: FlowKey, until: float | None = None) -> list[tuple[float, int]]:
        """(bin start in seconds, payload bytes received in that bin), with empty bins filled
        from 0 up to the last non-empty bin (or up to `until`)."""
        stats = self.flows.get(key)
        if stats is None:
            return []
        last = max(stats.bins, default=-1)
        if until is not None:
            last = max(last, self.bin_index(until))
        return [(round(index * self.bin_seconds, 9), stats.bins.get(index, 0))
                for index in range(last + 1)]

    def data_flows(self) -> list[FlowKey]:
        """Flows that delivered payload, most bytes first (ties by label, for stable output)."""
        keys = [key for key, stats in self.flows.items() if stats.payload_bytes_received]
        return sorted(keys, key=lambda key: (-self.flows[key].payload_bytes_received, key))
