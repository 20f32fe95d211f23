"""Synthetic time series shared by the demo tests."""

from __future__ import annotations

PATHS = {"10.0.1.1": "a", "10.0.2.1": "b"}


def rows_for(seconds: float, rates: dict[str, float], start: float = 0.0, bin_s: float = 0.1) -> list[dict]:
    """Binned rows as runner/results write them: constant Mbit/s per path."""
    rows = []
    for i in range(round(seconds / bin_s)):
        t = round(start + i * bin_s, 3)
        for n, (path, mbps) in enumerate(sorted(rates.items())):
            address = {v: k for k, v in PATHS.items()}[path]
            rows.append({"t_s": t, "subflow": str(n), "local": f"{address}:4000{n}",
                         "remote": "10.0.100.2:5201", "bytes": round(mbps * 1e6 / 8 * bin_s)})
    return rows
