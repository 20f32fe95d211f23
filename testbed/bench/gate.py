"""`testbed bench --compare`: each gated figure of a baseline against the same figure now.

The ratio is "now / baseline" for a higher-is-better figure and "baseline / now" for a
lower-is-better one, so below 1 is always worse; a figure fails when its ratio falls below the
baseline's tolerance for it (a lower figure still passes under its absolute `limit`). A gated
figure of the baseline that this run did not measure fails too: a benchmark that silently
stopped running must not pass the gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Row:
    name: str
    baseline: float
    now: float | None
    ratio: float | None
    tolerance: float
    gated: bool
    verdict: str  # PASS, FAIL, MISSING or "info"


def _ratio(better: str, baseline: float, now: float) -> float:
    if better == "higher":
        return now / baseline if baseline else float("inf")
    return baseline / now if now else float("inf")


def compare(baseline: dict[str, Any], current: dict[str, Any]) -> list[Row]:
    """One row per figure of the baseline (the baseline's tolerances decide)."""
    rows = []
    now_figures = current["figures"]
    for name, base in sorted(baseline["figures"].items()):
        figure = now_figures.get(name)
        gated = bool(base["gated"])
        if figure is None:
            rows.append(Row(name, base["value"], None, None, base["tolerance"], gated,
                            "MISSING" if gated else "info"))
            continue
        ratio = _ratio(base["better"], base["value"], figure["value"])
        within_limit = (base["better"] == "lower" and base.get("limit") is not None
                        and figure["value"] <= base["limit"])
        passed = ratio >= base["tolerance"] or within_limit
        verdict = ("PASS" if passed else "FAIL") if gated else "info"
        rows.append(Row(name, base["value"], figure["value"], ratio, base["tolerance"], gated,
                        verdict))
    return rows


def failed(rows: list[Row]) -> list[Row]:
    return [row for row in rows if row.verdict in ("FAIL", "MISSING")]


def format_table(rows: list[Row]) -> str:
    width = max([len("figure"), *(len(row.name) for row in rows)])
    lines = [f"{'figure':<{width}} {'baseline':>10} {'now':>10} {'ratio':>7} {'tolerance':>9}  "
             f"verdict"]
    for row in rows:
        now = "-" if row.now is None else f"{row.now:.4g}"
        ratio = "-" if row.ratio is None else f"{row.ratio:.3f}"
        tolerance = f">= {row.tolerance:.2f}" if row.gated else "-"
        lines.append(f"{row.name:<{width}} {row.baseline:>10.4g} {now:>10} {ratio:>7} "
                     f"{tolerance:>9}  {row.verdict}")
    return "\n".join(lines)
