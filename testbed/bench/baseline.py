"""A baseline from several runs: each figure's median, and a tolerance from the runs' spread.

One run of a loaded machine can be an outlier; the median of N runs is a fairer baseline, and
the spread between them says how far a later run may fall by noise alone. The tolerance of a
gated figure is 0.85 x (its lowest run / its highest run), rounded down to 0.05 and never above
the ceiling the command's table gives it: two runs may differ that much with nothing changed.
A figure whose runs disagree so much that the tolerance would fall below MIN_TOLERANCE cannot
tell a halved fast path from noise: it is recorded, not gated, and says why (a "lower" figure
with an absolute limit stays gated: under its limit it passes whatever the ratio).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

MARGIN = 0.85
MIN_TOLERANCE = 0.55


def tolerance_from_spread(values: list[float], ceiling: float) -> float:
    """The lowest baseline-relative ratio two of these runs reach (lowest / highest, whichever
    way is better), with a margin, rounded down to 0.05 and capped at `ceiling`."""
    worst = min(values) / max(values) if max(values) > 0 else 0.0
    return min(ceiling, math.floor(MARGIN * worst * 20) / 20)


def merge(docs: list[dict[str, Any]], ceilings: dict[str, float]) -> dict[str, Any]:
    """One baseline document from runs of the same mode; `ceilings` = the gated figures and
    their highest tolerance (the command's table)."""
    if not docs or len({bool(doc["quick"]) for doc in docs}) != 1:
        raise ValueError("merge needs at least one run, all quick or all full")
    merged = {**docs[-1], "runs": len(docs),
              "machine": {**docs[-1]["machine"],
                          "load_average_of_runs": [doc["machine"]["load_average_before"]
                                                   for doc in docs]}}
    figures = {}
    for name in sorted(set().union(*(doc["figures"] for doc in docs))):
        present = [doc["figures"][name] for doc in docs if name in doc["figures"]]
        values = [figure["value"] for figure in present]
        figure = dict(present[-1])
        figure["value"] = statistics.median(values)
        figure["rounds"] = values
        figure["detail"] = {**figure["detail"], "aggregate": f"median of {len(values)} runs "
                            f"(each: {figure['detail'].get('aggregate', 'one value')})",
                            "min_over_median": round(min(values) / figure["value"], 3),
                            "max_over_median": round(max(values) / figure["value"], 3)}
        figure["gated"] = name in ceilings and len(values) == len(docs)
        if figure["gated"]:
            tolerance = tolerance_from_spread(values, ceilings[name])
            if figure.get("limit") is not None:  # its absolute limit still passes it
                figure["tolerance"] = max(tolerance, 0.05)
            elif tolerance < MIN_TOLERANCE:
                figure["gated"] = False
                figure["detail"]["not_gated_because"] = (
                    f"runs spread {min(values):.4g}..{max(values):.4g}: a tolerance of "
                    f"{tolerance:.2f} could not tell a halved figure from noise")
            else:
                figure["tolerance"] = tolerance
        figures[name] = figure
    merged["figures"] = figures
    return merged
