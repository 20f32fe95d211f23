"""Triggers: middleboxes that start (or stop) misbehaving part-way through a connection.

Real boxes often pass the handshake untouched and interfere later: options stripped once data
has flowed (mptcp_net-next #518), the same on MP_JOIN subflows only (#544), DSS-bearing segments
dropped after a while. Every catalogue box takes the trigger parameters of
middleboxes.spec.CommonParams, and `gate()` wraps a box whose triggers are set in one
`Triggered` decorator, so no box implements them itself:

* `after_bytes`: the box acts on a flow's packets once it has seen that many payload bytes of
  the flow (a flow is one TCP connection, i.e. one MPTCP subflow, keyed by its 4-tuple; both
  directions summed, retransmissions included). The packet that crosses the threshold still
  passes: the decision for a packet uses the bytes seen *before* it.
* `after_s` / `until_s`: the window, in seconds since the box saw the flow's first packet
  (normally its SYN), during which the box acts: after_s <= elapsed < until_s.
* `flows`: `all`, `initial` (flows whose first packets carried no MP_JOIN) or `join` (MP_JOIN
  subflows; a flow counts as a join once any of its packets carried MP_JOIN, which is its SYN
  when the box saw the handshake).
* `active` and `set_active()`: the whole box on or off, for `[[timeline]]` entries that switch it
  at an experiment time (the runner calls set_active through the inline control socket).

A packet outside the window passes unchanged without reaching the box, and is counted in
`seen` and `inactive` (TriggerCounters). Stateful boxes (nat, rewrite_seq, coalesce, split)
therefore see only the packets inside the window: a flow that began before it is, to them, a
flow whose handshake they missed, as it would be for a real box that was switched on late.
Held packets are still released when the box turns inactive: the gate only decides which
arriving packets reach it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from middleboxes.contract import Direction, Middlebox, MiddleboxCounters
from middleboxes.flows import FlowKey, flow_key
from middleboxes.spec import CommonParams
from testbed.wire import types as wire
from testbed.wire.types import Packet

_JOIN_OPTIONS = (wire.MpJoinSyn, wire.MpJoinSynAck, wire.MpJoinAck)
# Flows remembered at most; the oldest is forgotten first (experiments have a handful).
MAX_TRACKED_FLOWS = 65536


@dataclass(slots=True)
class TriggerCounters(MiddleboxCounters):
    """A triggered box's counters: `inactive` of the `seen` packets passed outside its window."""

    inactive: int = 0

    def as_dict(self) -> dict[str, int]:
        return {**MiddleboxCounters.as_dict(self), "inactive": self.inactive}


@dataclass(slots=True)
class FlowProgress:
    """What the gate knows of one flow: when it first saw it, its payload bytes, MP_JOIN."""

    first_seen: float
    payload_bytes: int = 0
    join: bool = False


def has_triggers(params: CommonParams) -> bool:
    """Whether any trigger differs from 'always act'."""
    return bool(params.after_bytes or params.after_s or params.until_s is not None
                or params.flows != "all" or not params.active)


class TriggerGate:
    """The sans-IO decision: does the box act on this packet? Call for every arriving packet."""

    def __init__(self, params: CommonParams) -> None:
        self.after_bytes = params.after_bytes
        self.after_s = params.after_s
        self.until_s = params.until_s
        self.flows = params.flows
        self.active = params.active
        self._per_flow = bool(self.after_bytes or self.after_s or self.until_s is not None
                              or self.flows != "all")
        self._progress: dict[FlowKey, FlowProgress] = {}

    def set_active(self, active: bool) -> None:
        self.active = active

    def progress(self, key: FlowKey) -> FlowProgress | None:
        return self._progress.get(key)

    def decide(self, packet: Packet, direction: Direction, now: float) -> bool:
        if not self._per_flow:
            return self.active
        key = flow_key(packet, direction)
        flow = self._progress.get(key)
        if flow is None:
            if len(self._progress) >= MAX_TRACKED_FLOWS:
                del self._progress[next(iter(self._progress))]
            flow = self._progress[key] = FlowProgress(first_seen=now)
        tcp = packet.tcp
        if not flow.join and any(type(o) in _JOIN_OPTIONS for o in tcp.options):
            flow.join = True
        bytes_before = flow.payload_bytes
        flow.payload_bytes += len(tcp.payload)
        if not self.active:
            return False
        if self.flows != "all" and flow.join != (self.flows == "join"):
            return False
        elapsed = now - flow.first_seen
        if elapsed < self.after_s or (self.until_s is not None and elapsed >= self.until_s):
            return False
        return bytes_before >= self.after_bytes


class Triggered:
    """A middlebox behind a TriggerGate; everything else (timers, logs, counters) is the box's."""

    def __init__(self, box: Middlebox, gate: TriggerGate) -> None:
        counters = TriggerCounters(**box.counters.as_dict())
        box.counters = counters  # the box keeps counting into the same object
        self.box = box
        self.gate = gate
        self.name = box.name
        self.counters = counters

    def process(self, packet: Packet, direction: Direction, now: float) -> list[Packet]:
        if self.gate.decide(packet, direction, now):
            return self.box.process(packet, direction, now)
        self.counters.seen += 1
        self.counters.inactive += 1
        return [packet]

    def set_active(self, active: bool) -> None:
        self.gate.set_active(active)

    def next_deadline(self) -> float | None:
        return self.box.next_deadline()

    def release(self, now: float) -> list[tuple[Packet, Direction]]:
        return self.box.release(now)

    def __getattr__(self, name: str) -> Any:
        # change_log, edit_log, owned_addresses, flush, params: whatever the box has
        return getattr(self.box, name)


def gate(box: Middlebox, params: CommonParams, *, switchable: bool = False) -> Middlebox:
    """`box` behind its triggers, or `box` itself when it has none and need not be switchable
    (so an untriggered box keeps its fast paths and costs nothing more)."""
    if not switchable and not has_triggers(params):
        return box
    return Triggered(box, TriggerGate(params))
