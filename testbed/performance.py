"""Performance as a third axis of a matrix cell: goodput against the same pairing's reference.

A cell that stays `mptcp` while its goodput collapses is not fine (the sequence randomiser that
leaves SACK blocks unfixed showed a green `mptcp` at 2.5 Mbit/s where the reference row made
188). Every cell's goodput is divided by what the same pairing's reference row (the row
without middleboxes, same matrix run) makes on as many paths as the cell could use: the
reference's goodput per carrying subflow times the cell's usable paths (one when the row allows
one subflow or the outcome is a fallback, whose class already says MPTCP's paths were lost;
else the subflows the spec expects). Below the threshold (default 50 %, matrix spec key
`degraded_below`) a cell whose transfer completed intact is `degraded`, with the likely cause
read from its result: retransmissions, RTOs, a subflow that carried (almost) nothing. A reset,
stalled, truncated or corrupted cell keeps its fraction but is not marked: its classes say more.
"""

from __future__ import annotations

from typing import Any

DEFAULT_DEGRADED_BELOW = 0.5
RETRANS_NOTABLE = 0.02  # of the bytes sent
IDLE_SHARE = 0.05  # a subflow carrying under this share of the bytes is idle


def performance_facts(result: dict[str, Any]) -> dict[str, Any]:
    """Evidence a slow cell is judged by, from one run's result document."""
    conn = result["connections"][0]
    subflows = conn.get("subflows") or []
    sent = sum(int(s.get("bytes_sent", 0)) for s in subflows)
    retrans = sum(int(s.get("bytes_retrans", 0)) for s in subflows)
    carried = sum(int(s.get("bytes", 0)) for s in subflows)
    idle = [f"{s['local']}->{s['remote']}" for s in subflows
            if len(subflows) > 1 and carried and int(s.get("bytes", 0)) < IDLE_SHARE * carried]
    counters = conn.get("counters") or {}
    rtos = sum(int(per_host.get("TcpExtTCPTimeouts", 0)) for per_host in counters.values())
    expected = conn.get("expected_subflows")
    if expected and len(subflows) < expected and conn.get("outcome") == "mptcp":
        idle.append(f"{expected - len(subflows)} expected subflow(s) never opened")
    return {"retrans_share": round(retrans / sent, 4) if sent else 0.0, "rtos": rtos,
            "idle_subflows": idle, "subflows": len(subflows), "expected_subflows": expected}


ONE_PATH_OUTCOMES = ("fallback-syn", "fallback-infinite-map", "mp-fail", "subflow-rejected")
BROKEN_OUTCOMES = ("reset", "stalled")


def usable_paths(cell: dict[str, Any]) -> int:
    """How many paths the cell could use, given its spec and what the protocol did."""
    if cell.get("outcome") in ONE_PATH_OUTCOMES:
        return 1
    expected = (cell.get("performance") or {}).get("expected_subflows")
    return max(int(expected or cell.get("subflows_total") or 1), 1)


def likely_cause(facts: dict[str, Any]) -> str:
    """The evidence that most likely explains a collapse, in plain words."""
    causes = []
    if facts.get("rtos"):
        causes.append(f"{facts['rtos']} retransmission timeout(s) (TcpExtTCPTimeouts)")
    share = facts.get("retrans_share", 0.0)
    if share >= RETRANS_NOTABLE:
        causes.append(f"{share:.0%} of the bytes sent were retransmissions")
    if facts.get("idle_subflows"):
        causes.append(f"idle subflow(s): {', '.join(facts['idle_subflows'])}")
    return "; ".join(causes) or "no retransmission, RTO or idle subflow seen: look at the time series"


def mark_degraded(cells: list[dict[str, Any]], reference_row: str | None,
                  threshold: float = DEFAULT_DEGRADED_BELOW) -> None:
    """Annotate every ok cell with its goodput fraction of the reference (same pairing, same
    run) and, below `threshold`, `degraded` with the likely cause. In place."""
    if reference_row is None:
        return
    reference = {c["pairing"]: float(c.get("goodput_mbps") or 0.0)
                 / max(int(c.get("subflows_carrying") or 1), 1)  # per carrying subflow
                 for c in cells if c["row"] == reference_row and c.get("status") == "ok"}
    for cell in cells:
        cell.pop("degraded", None)
        per_path = reference.get(cell["pairing"])
        if cell.get("status") != "ok" or not per_path or cell["row"] == reference_row or cell.get("routed"):
            continue  # (a proxy or balancer cell runs on its own topology, at its own rates)
        fraction = float(cell.get("goodput_mbps") or 0.0) / (per_path * usable_paths(cell))
        cell["goodput_fraction"] = round(fraction, 4)
        intact = cell.get("integrity", "ok") in ("ok", "alg-edited")
        if fraction < threshold and intact and cell.get("outcome") not in BROKEN_OUTCOMES:
            cell["degraded"] = likely_cause(cell.get("performance") or {})
