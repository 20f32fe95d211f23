"""The live per-subflow telemetry next to what `ss -ti` prints for the same kernel subflows.

    sudo .venv/bin/python scripts/telemetry_vs_ss.py [--seconds 4] [--every-s 0.5] [--json FILE]

Runs a kernel<->kernel upload over two_path (two subflows; 20 Mbit/s, 20 ms each way and 0.5 %
loss per path) and, every EVERY_S while it runs, reads in the client's namespace `ss -tinH` and the
newest row of each subflow in the client's samples file (the endpoint's own telemetry, written
every 50 ms). Prints them side by side: congestion window (segments), smoothed RTT (ms), bytes
in flight (ss: (unacked - sacked - lost + retrans) x mss, the kernel's tcp_packets_in_flight,
the telemetry's formula), cumulative retransmitted segments, delivery rate (Mbit/s) and bytes
acked; then the median ratio telemetry/ss per column (1.0: same quantity, same unit).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from testbed.command import run_command
from testbed.runner import run_experiment
from testbed.spec import parse_spec

COLUMNS = ("cwnd", "srtt_ms", "in_flight_bytes", "retrans_total", "delivery_mbps", "bytes_acked")
TELEMETRY = {"cwnd": "cwnd_segments", "srtt_ms": "srtt_ms", "in_flight_bytes": "in_flight_bytes",
             "retrans_total": "retrans_segments", "delivery_mbps": "delivery_rate_mbps",
             "bytes_acked": "bytes_acked"}
_RATE_UNITS = {"bps": 1e-6, "Kbps": 1e-3, "Mbps": 1.0, "Gbps": 1e3}


def spec_for(seconds: float) -> dict[str, Any]:
    return {
        "name": "telemetry_vs_ss", "seed": 1,
        "topology": {"name": "two_path", "params": {"rate_mbit": 20, "delay_ms": 20, "loss_pct": 0.5}},
        "endpoints": [{"role": "server", "stack": "kernel"}, {"role": "client", "stack": "kernel"}],
        "traffic": {"seconds": seconds, "direction": "upload"},
        "mptcp": {"subflows": 2, "client_subflow_endpoints": True},
    }


def parse_ss(text: str) -> dict[str, dict[str, float]]:
    """`ss -tinH` output: per local address:port, the fields compared (ss prints a socket's
    addresses on one line and its tcp_info on the next)."""
    found: dict[str, dict[str, float]] = {}
    local = None
    for line in text.splitlines():
        if not line.startswith((" ", "\t")):
            # State (absent with a state filter), Recv-Q, Send-Q, local, peer
            # (a subflow bound to a device prints ADDRESS%DEVICE:PORT)
            addresses = [re.sub(r"%[^:]+", "", part) for part in line.split()
                         if re.fullmatch(r"[\d.]+(%[^:]+)?:\d+", part)]
            local = addresses[0] if addresses else None
            continue
        if local is None:
            continue
        info = line
        fields: dict[str, float] = {}

        def number(name: str, info: str = info) -> float | None:
            match = re.search(rf"(?<![\w_]){name}:([\d.]+)", info)
            return float(match.group(1)) if match else None

        mss = number("mss") or 0.0
        unacked, sacked, lost = number("unacked") or 0, number("sacked") or 0, number("lost") or 0
        retrans = re.search(r"(?<![\w_])retrans:(\d+)/(\d+)", info)
        retrans_now, retrans_total = (int(retrans.group(1)), int(retrans.group(2))) if retrans else (0, 0)
        rtt = re.search(r"(?<![\w_])rtt:([\d.]+)/", info)
        rate = re.search(r"delivery_rate ([\d.]+)([KMG]?bps)", info)
        fields["cwnd"] = number("cwnd") or 0.0
        fields["srtt_ms"] = float(rtt.group(1)) if rtt else 0.0
        fields["in_flight_bytes"] = (unacked - sacked - lost + retrans_now) * mss
        fields["retrans_total"] = retrans_total
        fields["delivery_mbps"] = float(rate.group(1)) * _RATE_UNITS[rate.group(2)] if rate else 0.0
        fields["bytes_acked"] = number("bytes_acked") or 0.0
        found[local] = fields
        local = None
    return found


def nearest_samples(samples: Path, seen: dict[str, dict[str, float]],
                    recent: int = 20) -> dict[str, dict[str, str]]:
    """Per subflow ss showed, the sample (of the newest `recent` of that subflow) taken nearest
    to ss's snapshot: the one whose bytes_acked is nearest to what ss printed (bytes_acked
    only grows, and the 50 ms samples are written while ss runs)."""
    rows: dict[str, list[dict[str, str]]] = {}
    if samples.exists():
        with samples.open() as stream:
            for row in csv.DictReader(stream):
                rows.setdefault(row["local"], []).append(row)
    nearest = {}
    for local, fields in seen.items():
        candidates = rows.get(local, [])[-recent:]
        if candidates:
            nearest[local] = min(candidates, key=lambda r: abs(float(r["bytes_acked"] or 0)
                                                                - fields["bytes_acked"]))
    return nearest


class Sampler:
    """The run's observer: every `every_s`, ss and the samples file, side by side."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.next_s = 0.5  # skip the handshake
        self.rows: list[dict[str, Any]] = []
        self.ss_outputs = 0

    def __call__(self, work_dir: Path, elapsed_s: float) -> None:
        if elapsed_s < self.next_s:
            return
        self.next_s = elapsed_s + self.every_s
        done = run_command(["ss", "-tinH", "state", "established"],
                           netns=f"tb-{work_dir.name}-client", check=False, timeout_s=5)
        seen = parse_ss(done.stdout)
        self.ss_outputs += 1
        for local, row in nearest_samples(work_dir / "client.samples.csv", seen).items():
            ours = {name: float(row[column]) if row.get(column) else None
                    for name, column in TELEMETRY.items()}
            self.rows.append({"t_s": round(elapsed_s, 3), "subflow": local,
                              "telemetry": ours, "ss": seen[local]})


def ratios(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Median telemetry/ss per column over the snapshots where ss is not 0."""
    medians: dict[str, float | None] = {}
    for name in COLUMNS:
        values = [r["telemetry"][name] / r["ss"][name] for r in rows
                  if r["telemetry"][name] is not None and r["ss"][name]]
        medians[name] = round(statistics.median(values), 3) if values else None
    return medians


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="length of the upload")
    parser.add_argument("--every-s", type=float, default=0.5, help="time between snapshots")
    parser.add_argument("--json", type=Path, help="write the snapshots and ratios here")
    args = parser.parse_args(argv)
    sampler = Sampler(args.every_s)
    with tempfile.TemporaryDirectory(prefix="telemetry-ss-") as out:
        run_experiment(parse_spec(spec_for(args.seconds)), Path(out), progress=lambda _m: None,
                       observer=sampler)
    header = f"{'t_s':>6} {'subflow':<20}" + "".join(f" {name + ' tel/ss':>26}" for name in COLUMNS)
    print(header)
    for row in sampler.rows:
        cells = "".join(f" {_fmt(row['telemetry'][n]):>12} / {_fmt(row['ss'][n]):<11}" for n in COLUMNS)
        print(f"{row['t_s']:>6} {row['subflow']:<20}{cells}")
    if not sampler.rows:
        print(f"telemetry_vs_ss: no snapshot matched ({sampler.ss_outputs} ss calls)", file=sys.stderr)
    medians = ratios(sampler.rows)
    print("median telemetry/ss: " + ", ".join(f"{k} {v}" for k, v in medians.items()))
    if args.json:
        args.json.write_text(json.dumps({"rows": sampler.rows, "median_ratio": medians}, indent=1) + "\n")
    return 0 if sampler.rows else 1


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}".rstrip("0").rstrip(".") if value % 1 else f"{int(value)}"


if __name__ == "__main__":
    sys.exit(main())
