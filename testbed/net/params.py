"""Typed link parameters with units in their names; an unknown key or impossible value is an error.

Mininet's TCLink swallows misspelt keyword arguments and ignores out-of-range values; here every
parameter is validated where it enters, so a spec typo fails before anything is built.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from testbed.errors import SpecError


@dataclass(frozen=True, slots=True)
class LinkParams:
    """What one link does to traffic, the same in both directions.

    rate_mbit None means unshaped (veth speed). queue_pkts is the bottleneck queue length; None
    picks a BDP-sized queue (see `effective_queue_pkts`).
    """

    rate_mbit: float | None = None
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    queue_pkts: int | None = None

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> SpecError:
            return SpecError(f"link parameter {name}={getattr(self, name)!r}: {why}")

        for name in ("rate_mbit", "delay_ms", "jitter_ms", "loss_pct"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad(name, "must be a number")
            if math.isnan(value) or math.isinf(value):
                raise bad(name, "must be finite")
        if self.rate_mbit is not None and not 0 < self.rate_mbit <= 100_000:
            raise bad("rate_mbit", "must be > 0 and <= 100000 (omit it for an unshaped link)")
        if self.delay_ms < 0 or self.delay_ms > 10_000:
            raise bad("delay_ms", "must be between 0 and 10000")
        if self.jitter_ms < 0 or self.jitter_ms > 10_000:
            raise bad("jitter_ms", "must be between 0 and 10000")
        if self.jitter_ms > 0 and self.jitter_ms > self.delay_ms:
            raise bad("jitter_ms", "must not exceed delay_ms (delay cannot go negative)")
        if not 0 <= self.loss_pct <= 100:
            raise bad("loss_pct", "must be between 0 and 100 (percent)")
        if self.queue_pkts is not None and (
            isinstance(self.queue_pkts, bool) or not isinstance(self.queue_pkts, int)
            or not 1 <= self.queue_pkts <= 1_000_000
        ):
            raise bad("queue_pkts", "must be an integer between 1 and 1000000")

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "link") -> LinkParams:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(
                f"{where}: unknown link parameter {unknown[0]!r} (known: {', '.join(sorted(known))})"
            )
        return cls(**data)

    def updated(self, changes: dict[str, Any], *, where: str = "link") -> LinkParams:
        """A copy with `changes` applied, validated like a new spec."""
        merged = {**asdict(self), **changes}
        return LinkParams.from_dict(merged, where=where)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def shaped(self) -> bool:
        return self.rate_mbit is not None

    def effective_queue_pkts(self, mtu: int = 1500) -> int:
        """The queue length used: explicit, or one bandwidth-delay product (RTT = 2 x delay,
        at least 20 ms) and never below 100 packets, a common router default."""
        if self.queue_pkts is not None:
            return self.queue_pkts
        if self.rate_mbit is None:
            return 1000
        rtt_s = max(2 * self.delay_ms, 20.0) / 1000
        bdp_pkts = self.rate_mbit * 1e6 / 8 * rtt_s / mtu
        return max(100, math.ceil(bdp_pkts))
