"""Outcome classes of a connection (DESIGN.md), decided from evidence and returned with it.

Evidence so far: the two ends' reports (integrity, errors, MPTCP in use, subflows that carried
data) and the kernel's MPTcpExt counter deltas of each endpoint namespace.
"""

from __future__ import annotations

from typing import Any


def classify(
    record: Any, counters: dict[str, dict[str, int]], expected_subflows: int
) -> tuple[str, list[str]]:
    """A first outcome class from the evidence at hand (ends' reports, kernel counters)."""
    evidence: list[str] = []
    every = {k: v for per_ns in counters.values() for k, v in per_ns.items()}
    if record.integrity != "ok":
        if record.errors:
            evidence += list(record.errors)
            return "reset", evidence
        evidence += list(record.problems)
        return "corrupted", evidence
    if record.errors:
        evidence += list(record.errors)
        return "reset", evidence
    if record.bytes == 0:
        return "stalled", ["no payload byte delivered"]
    if every.get("MPTcpExtMPFailTx") or every.get("MPTcpExtMPFailRx"):
        evidence.append("MPFailTx/Rx moved")
        return "mp-fail", evidence
    if every.get("MPTcpExtInfiniteMapTx") or every.get("MPTcpExtInfiniteMapRx"):
        evidence.append("InfiniteMapTx/Rx moved")
        return "fallback-infinite-map", evidence
    if not record.mptcp_used:
        evidence.append("MPTCP_INFO reports fallback or plain TCP")
        return "fallback-syn", evidence
    carrying = [s for s in record.subflows if s.bytes_acked > 0]
    evidence.append(f"{len(carrying)} subflow(s) carried data")
    if len(carrying) < expected_subflows and (
        every.get("MPTcpExtMPJoinSynTx", 0) or every.get("MPTcpExtMPJoinSynRx", 0)
        or every.get("MPTcpExtMPJoinSynAckHMacFailure", 0)
    ):
        return "subflow-rejected", evidence
    return "mptcp", evidence
