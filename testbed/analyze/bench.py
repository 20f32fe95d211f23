"""Packets per second of `testbed analyze` on a synthetic header-only capture.

    python -m testbed.analyze.bench [--packets N] [--repeat R] [--keep PATH]

Writes a capture with testbed.analyze.synthetic (one MPTCP connection, two subflows, Linux
cooked v1, headers only as `tcpdump -s 200` leaves them), analyses it R times in this process
(the pass only, no output files) and prints packets per second of wall-clock and of CPU time
for each run and their medians. CPU time is the figure to compare on a machine shared with
other work; on an idle one both agree.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from testbed.analyze.command import analyse_capture
from testbed.analyze.synthetic import expected_totals, write_synthetic_capture


def measure(path: Path) -> tuple[int, float, float, int]:
    """(packets, wall seconds, CPU seconds, data bytes the analysis found) of one pass."""
    wall, cpu = time.perf_counter(), time.process_time()
    analysis, reader, _notes = analyse_capture(path, progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    found = analysis.connections[0].data[0].summary()["data_acked"] if analysis.connections else 0
    return reader.packets, wall, cpu, found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.analyze.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None,
                        help="write the capture here and keep it (default: a temporary file)")
    args = parser.parse_args(argv)
    if args.packets < 100 or args.repeat < 1:
        print("bench: --packets must be at least 100 and --repeat at least 1", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="testbed-analyze-bench-") as temporary:
        path = args.keep or Path(temporary) / "synthetic.pcap"
        written = write_synthetic_capture(path, packets=args.packets)
        expected = expected_totals(args.packets)["total_bytes"]
        print(f"capture: {path} ({written} packets, {path.stat().st_size / 1e6:.1f} MB, headers only)")
        walls, cpus = [], []
        for run in range(args.repeat):
            packets, wall, cpu, found = measure(path)
            if found != expected:
                print(f"bench: the analysis found {found} data bytes, the capture holds {expected}",
                      file=sys.stderr)
                return 1
            walls.append(packets / wall)
            cpus.append(packets / cpu)
            print(f"run {run + 1}: {packets} packets in {wall:.2f} s wall ({packets / wall:,.0f}/s), "
                  f"{cpu:.2f} s CPU ({packets / cpu:,.0f}/s)")
        print(f"median: {statistics.median(walls):,.0f} packets/s wall, "
              f"{statistics.median(cpus):,.0f} packets/s CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
