"""Which share of a connection's bytes a link carried while it was up and while it was down.

The subway ride's claim is per window: in each station window (the wifi link up) most bytes
go over wifi, between stations (wifi down) almost none do, and the connection carries data
in every window. `[expect] trace_share = { link = "wifi", inside_min = 0.5, outside_max =
0.05, margin_s = 2 }` checks it from the run's time series: the first `margin_s` seconds of
each window are left out (the subflow needs a retransmission timeout and a slow start to
come back, and the sender a moment to notice the path is gone).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from testbed.errors import SpecError

SHARE_KEYS = {"link": str, "inside_min": float, "outside_max": float, "margin_s": float}


@dataclass(frozen=True)
class WindowShare:
    start_s: float
    end_s: float
    up: bool
    link_bytes: int
    total_bytes: int

    @property
    def share(self) -> float:
        return self.link_bytes / self.total_bytes if self.total_bytes else 0.0


def validate_share_expectation(raw: Any, where: str) -> dict[str, Any]:
    """`[expect].trace_share`, checked when the spec is read."""
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: must be a table {{ link = \"NAME\", inside_min = 0.5, ... }}")
    for key, value in raw.items():
        if key not in SHARE_KEYS:
            raise SpecError(f"{where}: unknown key {key!r} (allowed: {', '.join(SHARE_KEYS)})")
        wanted = SHARE_KEYS[key]
        if wanted is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise SpecError(f"{where}.{key}: expected a number, got {value!r}")
        if wanted is str and not isinstance(value, str):
            raise SpecError(f"{where}.{key}: expected a string, got {value!r}")
    if "link" not in raw:
        raise SpecError(f"{where}: missing required key 'link'")
    for key in ("inside_min", "outside_max"):
        if not 0 <= raw.get(key, 0) <= 1:
            raise SpecError(f"{where}.{key}: a share, 0..1")
    if raw.get("margin_s", 0) < 0:
        raise SpecError(f"{where}.margin_s must be >= 0")
    return raw


def link_windows(timeline: list[dict[str, Any]] | tuple[Any, ...], link: str,
                 end_s: float) -> list[tuple[float, float, bool]]:
    """(start, end, up) spans of a link from the planned up/down events of a timeline (spec
    TimelineEvents or their dicts); the link starts up."""
    changes = []
    for event in timeline:
        get = event.get if isinstance(event, dict) else lambda k, e=event: getattr(e, k, None)
        if get("link") == link and get("up") is not None:
            changes.append((float(get("at_s")), bool(get("up"))))
    windows, start, up = [], 0.0, True
    for at_s, new_up in sorted(changes):
        if new_up == up or at_s >= end_s:
            continue
        if at_s > start:
            windows.append((start, at_s, up))
        start, up = at_s, new_up
    if end_s > start:
        windows.append((start, end_s, up))
    return windows


def window_shares(series: list[dict[str, Any]], link_addresses: set[str],
                  windows: list[tuple[float, float, bool]], margin_s: float,
                  bin_s: float) -> list[WindowShare]:
    """Bytes per window (minus its first margin_s) on subflows with an end in link_addresses."""
    out = []
    for start, end, up in windows:
        lo = start + margin_s
        link_bytes = total = 0
        for row in series:
            t = float(row["t_s"])
            if t < lo or t + bin_s > end:
                continue
            ends = {str(row["local"]).rsplit(":", 1)[0], str(row["remote"]).rsplit(":", 1)[0]}
            total += int(row["bytes"])
            if ends & link_addresses:
                link_bytes += int(row["bytes"])
        out.append(WindowShare(round(start, 3), round(end, 3), up, link_bytes, total))
    return out


def check_trace_share(expect: dict[str, Any], shares: list[WindowShare]) -> list[str]:
    """Failures: an up window whose share is below inside_min, a down window above
    outside_max, a window (long enough to judge) without any byte: the connection stopped."""
    failures = []
    inside_min = expect.get("inside_min", 0.5)
    outside_max = expect.get("outside_max", 0.05)
    link = expect["link"]
    for w in shares:
        label = f"{link} {'up' if w.up else 'down'} {w.start_s:g}-{w.end_s:g} s"
        if w.total_bytes == 0:
            failures.append(f"{label}: no byte delivered (connection stalled or broken)")
        elif w.up and w.share < inside_min:
            failures.append(f"{label}: {w.share:.0%} of bytes on {link} < {inside_min:.0%}")
        elif not w.up and w.share > outside_max:
            failures.append(f"{label}: {w.share:.0%} of bytes on {link} > {outside_max:.0%}")
    return failures


def trace_share_result(expect: dict[str, Any], timeline: Any, link_addresses: set[str],
                       series: list[dict[str, Any]], end_s: float, bin_s: float) -> dict[str, Any]:
    """The per-window table and its failures, as result.json's expectations carry them."""
    windows = link_windows(timeline, expect["link"], end_s)
    shares = window_shares(series, link_addresses, windows, expect.get("margin_s", 0.0), bin_s)
    return {"windows": [{**asdict(w), "share": round(w.share, 4)} for w in shares],
            "failures": check_trace_share(expect, shares)}
