"""coalesce: merges consecutive in-order data segments of a flow into one, as LRO/GRO do.

Imitates receive offload (LRO in NICs, the kernel's GRO) and transparent proxies that re-send
what they buffered: in-order segments of one flow and direction are held up to `hold_ms` and
merged while the merged payload stays within `max_bytes`. Only one segment's options survive
(`keep_options`): the first's (LRO keeps the head's header) or the last's (a proxy writing with
its latest state). Linux GRO only merges segments with identical options; this box models
the LRO engines and proxies that do not check. RFC 8684 §3.3 lets one DSS mapping cover several
segments, but a merge that keeps one mapping and drops the next leaves bytes uncovered, which
Linux 6.18 treats as DSS corruption (experiments/middleboxes/split_then_coalesce.toml).
The held run is flushed, in order, when a segment does not continue it (out-of-order or
retransmission), when any other packet of the same flow and direction arrives (FIN, SYN, RST,
a pure ACK: it must not overtake held data), when `max_bytes` is reached, or at the deadline.
The merged segment carries the latest ACK and window and any PSH. On a forwarding path GRO'd
super-segments are cut up again before they leave, so what reaches the wire fits the MTU:
merging stops where the merged packet (headers and kept options included) would exceed
`mtu_bytes` (1500 by default; 0 models a jumbo path and then `max_bytes` alone limits).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from middleboxes.catalogue_base import MiddleboxBase
from middleboxes.contract import Direction
from middleboxes.flows import FlowKey, flow_key, ip_and_tcp_header_bytes, seq_add
from middleboxes.spec import CommonParams, ParamError, directions_of, param
from middleboxes.split import MAX_TCP_PAYLOAD
from testbed.wire.tcp_options import options_length
from testbed.wire.types import ACK, PSH, Packet, TcpOption

_MERGEABLE_FLAGS = ACK | PSH
HEADERS_BYTES = 40  # IPv4 + TCP without options (IPv6: 60 and its extension headers)


@dataclass(frozen=True, kw_only=True)
class CoalesceParams(CommonParams):
    max_bytes: int = param(MAX_TCP_PAYLOAD, "largest merged payload, bytes", minimum=2,
                           maximum=MAX_TCP_PAYLOAD)
    mtu_bytes: int = param(1500, "largest merged IP packet (headers and options included) the "
                           "output link carries; 0 = no limit (jumbo paths)", minimum=0,
                           maximum=65535)
    hold_ms: float = param(1.0, "longest time a segment waits for followers, milliseconds",
                           minimum=0.0)
    keep_options: Literal["first", "last"] = param(
        "first", "whose TCP options the merged segment carries")
    direction: Literal["upstream", "downstream", "both"] = param(
        "both", "direction of the segments to merge")

    def check(self) -> None:
        if self.mtu_bytes and self.mtu_bytes < HEADERS_BYTES + 2:
            raise ParamError("mtu_bytes", f"got {self.mtu_bytes}: no room for two payload bytes "
                                          f"after {HEADERS_BYTES} bytes of headers")


@dataclass(slots=True)
class _HeldRun:
    packet: Packet  # the merged segment so far (the first arrival, edited in place)
    deadline: float
    order: int  # tie-breaker so equal deadlines release in arrival order
    segments: int = 1


class Coalesce(MiddleboxBase):
    name = "coalesce"
    imitates = "receive offload (NIC LRO, Linux GRO) or a buffering transparent proxy"
    params_type = CoalesceParams

    def __init__(self, params: CoalesceParams, rng: random.Random) -> None:
        super().__init__(params, rng)
        self.params: CoalesceParams = params
        self._directions = directions_of(params.direction)
        self._held: dict[tuple[FlowKey, Direction], _HeldRun] = {}
        self._arrivals = 0

    def capacity(self, options: list[TcpOption], headers_bytes: int = HEADERS_BYTES) -> int:
        """The largest payload a merged segment carrying `options` may have, behind
        `headers_bytes` of IP and TCP headers (flows.ip_and_tcp_header_bytes)."""
        if not self.params.mtu_bytes:
            return self.params.max_bytes
        room = self.params.mtu_bytes - headers_bytes - options_length(options)
        return min(self.params.max_bytes, room)

    def process(self, packet: Packet, direction: Direction, now: float) -> list[Packet]:
        self.counters.seen += 1
        if direction not in self._directions:
            return [packet]
        slot = (flow_key(packet, direction), direction)
        run = self._held.get(slot)
        tcp = packet.tcp
        mergeable = bool(tcp.payload) and not tcp.flags & ~_MERGEABLE_FLAGS
        out: list[Packet] = []
        headers_bytes = ip_and_tcp_header_bytes(packet)
        if run is not None:
            held = run.packet.tcp
            kept = held.options if self.params.keep_options == "first" else tcp.options
            limit = self.capacity(kept, ip_and_tcp_header_bytes(run.packet))
            continues = (mergeable and tcp.seq == seq_add(held.seq, len(held.payload))
                         and len(held.payload) + len(tcp.payload) <= limit)
            if continues:
                self._merge(run, packet)
                if len(held.payload) < limit:
                    return []
            del self._held[slot]
            out.append(self._emit(run, direction, now))
            if continues:
                return out
        if mergeable and len(tcp.payload) < self.capacity(tcp.options, headers_bytes):
            self._arrivals += 1
            self._held[slot] = _HeldRun(packet, now + self.params.hold_ms / 1000.0,
                                        self._arrivals)
        else:
            out.append(packet)
        return out

    def _merge(self, run: _HeldRun, packet: Packet) -> None:
        held = run.packet.tcp
        tcp = packet.tcp
        held.payload += tcp.payload
        held.ack = tcp.ack
        held.window = tcp.window
        held.flags |= tcp.flags & PSH
        held.checksum = None
        if self.params.keep_options == "last":
            held.options = tcp.options
        run.segments += 1

    def _emit(self, run: _HeldRun, direction: Direction, now: float) -> Packet:
        if run.segments > 1:
            self.counters.changed += run.segments
            self.change_log.record(now, direction, run.packet,
                                   f"merged {run.segments} segments into "
                                   f"{len(run.packet.tcp.payload)} bytes",
                                   keep_options=self.params.keep_options)
        return run.packet

    def next_deadline(self) -> float | None:
        if not self._held:
            return None
        return min(run.deadline for run in self._held.values())

    def release(self, now: float) -> list[tuple[Packet, Direction]]:
        due = sorted(((run.deadline, run.order, slot) for slot, run in self._held.items()
                      if run.deadline <= now))
        released = []
        for _, _, slot in due:
            run = self._held.pop(slot)
            released.append((self._emit(run, slot[1], now), slot[1]))
        return released

    def flush(self, now: float) -> list[tuple[Packet, Direction]]:
        """Everything still held, in arrival order (for a runtime shutting down)."""
        runs = sorted(self._held.items(), key=lambda item: item[1].order)
        self._held.clear()
        return [(self._emit(run, slot[1], now), slot[1]) for slot, run in runs]
