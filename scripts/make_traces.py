#!/usr/bin/env python3
"""Generate the link traces shipped in traces/ (deterministic: a fixed seed per trace).

    python3 scripts/make_traces.py [--out traces]

- stop_and_go.up (Mahimahi): a cellular link in a car in town, 60 s repeating: driving at
  6..16 Mbit/s (a random walk, a new rate every 500 ms) broken by stops of 2..4 s every
  10..15 s where no delivery opportunity comes (a bin rate of 0: packets wait).
- subway_cellular.csv: the phone's cellular path on a 270 s ride, a new rate every second,
  a random walk kept within 2..20 Mbit/s, one-way delay 30..60 ms with it.
- subway_wifi.csv: the phone's wifi path on the same ride: present (30..40 Mbit/s, 5 ms)
  only in the 20 s station windows that start every 90 s (the ride starts at a station),
  absent (rate 0: the link is down) between stations.

Nothing here is measured or copied: the shapes are made up to exercise the testbed, and the
numbers above are their only source.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

MTU_BITS = 1500 * 8
STATION_PERIOD_S = 90
STATION_WINDOW_S = 20
RIDE_S = 270


def stop_and_go(seed: int = 1, period_s: int = 60) -> list[int]:
    """Mahimahi delivery opportunities (ms) of one period."""
    rng = random.Random(seed)
    rate_at_ms: list[float] = []
    rate = 10.0
    next_stop = rng.uniform(10, 15) * 1000
    while len(rate_at_ms) < period_s * 1000:
        now = len(rate_at_ms)
        if now >= next_stop:
            rate_at_ms += [0.0] * int(rng.uniform(2, 4) * 1000)
            next_stop = len(rate_at_ms) + rng.uniform(10, 15) * 1000
            continue
        rate = min(16.0, max(6.0, rate + rng.gauss(0, 2)))
        rate_at_ms += [rate] * 500
    stamps, credit = [], 0.0
    for ms, mbit in enumerate(rate_at_ms[:period_s * 1000], start=1):
        credit += mbit * 1e6 / 1000 / MTU_BITS  # packets this millisecond may carry
        while credit >= 1:
            stamps.append(ms)
            credit -= 1
    if stamps[-1] != period_s * 1000:
        stamps.append(period_s * 1000)  # the last line is the period
    return stamps


def subway_cellular(seed: int = 2) -> list[str]:
    rng = random.Random(seed)
    rows, rate = [], 10.0
    for t in range(RIDE_S):
        rate = min(20.0, max(2.0, rate + rng.gauss(0, 3)))
        delay = round(30 + 30 * (20 - rate) / 18)  # a weaker signal, a longer delay
        rows.append(f"{t},{rate:.1f},{delay},")
    return rows


def subway_wifi(seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    rows = []
    for station in range(0, RIDE_S, STATION_PERIOD_S):
        for t in range(station, station + STATION_WINDOW_S, 5):
            rows.append(f"{t},{rng.uniform(30, 40):.1f},5,")
        rows.append(f"{station + STATION_WINDOW_S},0,,")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "traces")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    header = "time_s,rate_mbit,delay_ms,loss_pct"
    (args.out / "stop_and_go.up").write_text("\n".join(map(str, stop_and_go())) + "\n")
    (args.out / "subway_cellular.csv").write_text(
        "# made by scripts/make_traces.py: subway ride, cellular path\n" + header + "\n"
        + "\n".join(subway_cellular()) + "\n")
    (args.out / "subway_wifi.csv").write_text(
        "# made by scripts/make_traces.py: subway ride, wifi only at stations (rate 0 = absent)\n"
        + header + "\n" + "\n".join(subway_wifi()) + "\n")
    for name in ("stop_and_go.up", "subway_cellular.csv", "subway_wifi.csv"):
        print(args.out / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
