"""A matrix spec's `[outcome_only]` table: cells judged on their class alone run shorter.

Two kinds of cell need only their class, not a goodput comparable with the other cells':

- a cell whose expectation ends incomplete (an alternative is `reset` or `stalled`, or has the
  integrity `truncated`, as in `mp-fail · truncated`): what decides it is that the transfer
  stopped making progress, which the endpoints detect with their no-progress timeout
  (traffic.timeout_s, 60 s by default). `stall_timeout_s` shortens that timeout for these cells
  only (not where the client is in a VM); the class comes from the same evidence (the
  endpoints' own timeout and reset errors, the counters, the oracle), just sooner.
- a row marked `outcome_only = true` (e.g. a transfer that crawls through a lossy box but ends
  as `mptcp`): it runs with `traffic`, a smaller transfer, over the row's own traffic.

Every other cell keeps the base traffic, so goodput figures stay comparable between runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from testbed.errors import SpecError

INCOMPLETE_OUTCOMES = frozenset({"reset", "stalled"})
TRAFFIC_KEYS = {"bytes": int, "seconds": (int, float), "timeout_s": (int, float)}


@dataclass(frozen=True)
class OutcomeOnly:
    """The table's settings; the defaults change nothing."""

    stall_timeout_s: float | None = None
    traffic: dict[str, Any] = field(default_factory=dict)


def parse_outcome_only(data: Any, source: str) -> OutcomeOnly:
    """The `[outcome_only]` table (absent: nothing changes); a bad value is one SpecError line."""
    where = f"{source}: [outcome_only]"
    if data is None:
        return OutcomeOnly()
    if not isinstance(data, dict):
        raise SpecError(f"{where} must be a table")
    unknown = sorted(set(data) - {"stall_timeout_s", "traffic"})
    if unknown:
        raise SpecError(f"{where}: unknown key {unknown[0]!r} (allowed: stall_timeout_s, traffic)")
    stall = data.get("stall_timeout_s")
    if stall is not None and (isinstance(stall, bool) or not isinstance(stall, (int, float))
                              or not math.isfinite(stall) or stall <= 0):
        raise SpecError(f"{where}.stall_timeout_s must be a number of seconds above 0, got "
                        f"{stall!r}")
    traffic = data.get("traffic", {})
    if not isinstance(traffic, dict):
        raise SpecError(f"{where}.traffic must be a table, e.g. {{ bytes = 2000000 }}")
    for key, value in traffic.items():
        if key not in TRAFFIC_KEYS:
            raise SpecError(f"{where}.traffic: unknown key {key!r} (allowed: "
                            f"{', '.join(TRAFFIC_KEYS)})")
        if isinstance(value, bool) or not isinstance(value, TRAFFIC_KEYS[key]) or value <= 0:
            raise SpecError(f"{where}.traffic.{key} must be a number above 0, got {value!r}")
    return OutcomeOnly(None if stall is None else float(stall), dict(traffic))


def ends_incomplete(accepted: list[tuple[str, str | None]]) -> bool:
    """True when any accepted class is an incomplete transfer: a reset, a stall, or a
    truncated delivery (mp-fail · truncated)."""
    return any(outcome in INCOMPLETE_OUTCOMES or integrity == "truncated"
               for outcome, integrity in accepted)


def traffic_overrides(settings: OutcomeOnly, outcome_only_row: bool,
                      accepted: list[tuple[str, str | None]], *,
                      client_in_vm: bool = False) -> dict[str, Any]:
    """What the table changes in one cell's traffic (empty: a cell that measures). A client in
    a VM keeps the cell's timeout: its program's start-up in the guest counts against the host
    server's accept and the runner's deadline, which a stall timeout would shorten."""
    changes: dict[str, Any] = {}
    if outcome_only_row:
        changes.update(settings.traffic)
    if settings.stall_timeout_s is not None and ends_incomplete(accepted) and not client_in_vm:
        changes["timeout_s"] = settings.stall_timeout_s
    return changes


def apply_traffic(traffic: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`traffic` with `changes` merged in; bytes and seconds exclude each other, so giving one
    drops the other."""
    merged = {**traffic, **changes}
    if "bytes" in changes:
        merged.pop("seconds", None)
    if "seconds" in changes:
        merged.pop("bytes", None)
    return merged
