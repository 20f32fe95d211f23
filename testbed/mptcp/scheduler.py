"""Packet schedulers: which subflow(s) carry the next chunk of data.

The connection hands a scheduler only subflows that can send right now (congestion and
flow-control room), already narrowed by the backup rule of `eligible_subflows`; the
scheduler only has to rank them. Chosen by name from the explicit `SCHEDULERS` registry.
"""

from __future__ import annotations

from testbed.mptcp.subflow_context import SubflowContext
from testbed.mptcp.tcp_state import TcpState


def eligible_subflows(subflows: list[SubflowContext]) -> list[SubflowContext]:
    """Usable subflows, with backups only when no non-backup subflow is usable (RFC 8684
    3.3.8: backup paths carry data only when no regular path is available), and stale ones
    (an RTO without progress: the path may be dead) only when every usable one is stale, as
    Linux's scheduler skips stale subflows while another is active."""
    # asked for every packet: the state is compared directly (no property call)
    usable = [s for s in subflows if s.data_ready and (tcp := s.tcp).fin_offset is None
              and tcp.state is not TcpState.CLOSED and tcp.close_reason is None]
    if len(usable) < 2:
        return usable  # one or none: neither rule below can change the answer
    active = [s for s in usable if not s.stale]
    if active:
        usable = active
    regular = [s for s in usable if not s.backup]
    return regular if regular else usable


def _rtt_key(subflow: SubflowContext) -> tuple[float, int]:
    rtt = subflow.tcp.rtt
    srtt = rtt.srtt
    return (srtt if srtt is not None else rtt.initial_rto, subflow.tcp.subflow_id)


class Scheduler:
    name = "base"
    # True when the choice depends only on properties that sending does not change except
    # the chosen subflow's own room (so the connection may keep filling it without asking)
    sticky = False

    def select(self, ready: list[SubflowContext]) -> list[SubflowContext]:
        """The subflow(s) to put the next chunk on; `ready` is never empty."""
        raise NotImplementedError


class LowestRttScheduler(Scheduler):
    """Linux's default: the ready subflow with the smallest smoothed RTT."""

    name = "lowest_rtt"
    sticky = True

    def select(self, ready: list[SubflowContext]) -> list[SubflowContext]:
        return [min(ready, key=_rtt_key)]


class RoundRobinScheduler(Scheduler):
    """Each chunk on the next ready subflow after the one used last (by subflow id)."""

    name = "round_robin"

    def __init__(self) -> None:
        self.last_id = -1

    def select(self, ready: list[SubflowContext]) -> list[SubflowContext]:
        ordered = sorted(ready, key=lambda s: s.tcp.subflow_id)
        for subflow in ordered:
            if subflow.tcp.subflow_id > self.last_id:
                break
        else:
            subflow = ordered[0]
        self.last_id = subflow.tcp.subflow_id
        return [subflow]


class RedundantScheduler(Scheduler):
    """Every chunk on every ready subflow (lowest latency at the cost of capacity)."""

    name = "redundant"

    def select(self, ready: list[SubflowContext]) -> list[SubflowContext]:
        return sorted(ready, key=lambda s: s.tcp.subflow_id)


SCHEDULERS: dict[str, type[Scheduler]] = {
    "lowest_rtt": LowestRttScheduler,
    "round_robin": RoundRobinScheduler,
    "redundant": RedundantScheduler,
}


def create_scheduler(name: str) -> Scheduler:
    try:
        return SCHEDULERS[name]()
    except KeyError:
        raise ValueError(f"unknown scheduler {name!r}; known: {sorted(SCHEDULERS)}") from None
