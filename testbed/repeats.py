"""Repeated runs of one cell or spec: seeds, class distributions and goodput intervals.

One draw cannot tell a stable class from a coin toss (`split_then_coalesce` kernel→python gave
three different answers in three runs), so `--repeat N` runs each cell N times with seeds
derived from the spec's and keeps every outcome. A cell's class is "OUTCOME · INTEGRITY"; when
the repeats disagree it is `unstable`, with the distribution. Goodput is summarised as a median
with a distribution-free confidence interval (order statistics of the binomial), which `testbed
compare` uses to call a regression only when the intervals separate.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from testbed.sim.rng import derive_seed

UNSTABLE = "unstable"
SEPARATOR = " \u00b7 "
CONFIDENCE = 0.95


def repeat_seed(seed: int, index: int) -> int:
    """The seed of repeat `index`: the spec's own for the first, derived ones after it, so a
    single run is the same run as before repeats existed."""
    return seed if index == 0 else derive_seed(seed, f"repeat/{index}") % (1 << 63)


def class_of(outcome: str, integrity: str | None) -> str:
    """A cell's class on both axes, as the tables show it ("mp-fail · alg-edited")."""
    return outcome if not integrity or integrity == "ok" else f"{outcome}{SEPARATOR}{integrity}"


@dataclass(frozen=True)
class Interval:
    """Median of a sample with a confidence interval; `confidence` is the exact coverage."""

    median: float
    low: float
    high: float
    confidence: float
    n: int

    def as_json(self) -> dict[str, Any]:
        return {"median": self.median, "low": self.low, "high": self.high,
                "confidence": round(self.confidence, 4), "n": self.n}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Interval:
        return cls(float(doc["median"]), float(doc["low"]), float(doc["high"]),
                   float(doc["confidence"]), int(doc["n"]))


def _binomial_cdf(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """The median and the narrowest order-statistic interval [x_(k), x_(n-k+1)] covering it with
    at least `confidence` (with few values the widest one, [min, max], and its real coverage)."""
    if not values:
        raise ValueError("median_interval of no values")
    data = sorted(values)
    n = len(data)
    k = 1  # 1-based rank of the low end
    while k + 1 <= n // 2 and 1 - 2 * _binomial_cdf(k, n) >= confidence:
        k += 1
    coverage = 1 - 2 * _binomial_cdf(k - 1, n) if n > 1 else 0.0
    return Interval(statistics.median(data), data[k - 1], data[n - k], coverage, n)


def distribution(classes: Sequence[str]) -> dict[str, int]:
    """Class -> how many repeats had it, most frequent first."""
    return dict(Counter(classes).most_common())


def summarize_repeats(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What a repeated cell shows: its class (or unstable), the distribution and the goodput
    interval, from the per-repeat records (each with outcome, integrity, goodput_mbps)."""
    classes = [class_of(r["outcome"], r.get("integrity")) for r in records]
    counts = distribution(classes)
    goodputs = [float(r["goodput_mbps"]) for r in records if r.get("goodput_mbps") is not None]
    summary: dict[str, Any] = {"repeats": len(records), "distribution": counts,
                               "stable": len(counts) == 1}
    if goodputs:
        summary["goodput"] = median_interval(goodputs).as_json()
    return summary
