"""`testbed stack membench`: the python stack's resident memory over one long transfer.

The goal (issue 21): the python endpoint process stays at or under 48 MB of RSS and flat, within
10 %, over a 10 GB transfer. One run on two_path (per-path rate `--rate-mbit`, 1000 by default
so 10 GB takes minutes, not the 8 of 2 x 100 Mbit/s): the python client sends `--bytes` to a
kernel MPTCP server (or receives them, `--direction download`) while this process reads the
client's /proc status twice a second.

Printed: the peak (the kernel's high-water mark, VmHWM, so a spike between two reads counts),
the early level (the highest read from a tenth to a quarter of the transfer, once slow start
and the buffers have filled), the highest read of the last quarter, and growth = late / early:
maxima against maxima, since the reads swing by a few MB around their level as buffers are
filled and freed. Plus the goodput and whether the bytes arrived intact, since a transfer that
stalls uses less.

    testbed stack membench [--bytes 10G] [--rate-mbit 1000] [--direction upload] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from testbed import kernel_mptcp
from testbed.bench_stack import BenchRun, _run_pair
from testbed.endpoints.kernel import _positive_float
from testbed.errors import EnvironmentProblem, RunFailed
from testbed.net.build import Network
from testbed.net.state import RunState
from testbed.runner import detect_backends
from testbed.sim.cli import UsageError, parse_size
from topologies import build_topology

GOAL_PEAK_MB = 48.0
GOAL_GROWTH = 1.10
SAMPLE_INTERVAL_S = 0.5  # MIN_READS in a 600 MB transfer of either core (native.py)
FIRST_READ_S = 1.0  # after python's exec: its imports are done by then
MIN_READS = 8  # fewer cannot show growth: an early and a late part of several reads each


def _status_kib(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in KiB of a running process, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    if len(values) != 2:
        return None  # a zombie has no memory lines
    return values["VmRSS"], values["VmHWM"]


@dataclass
class RssSampler:
    """Reads one process's RSS every `interval_s` in a thread until the process is gone."""

    interval_s: float = SAMPLE_INTERVAL_S
    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds, RSS KiB)
    high_water_kib: int = 0
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def watch(self, pid: int) -> None:
        self._thread = threading.Thread(target=self._run, args=(pid,), daemon=True)
        self._thread.start()

    def _run(self, pid: int) -> None:
        started = time.monotonic()
        if not self._wait_for_python(pid):
            return
        # Python itself is a few MB until its imports are done; reads start FIRST_READ_S in,
        # and VmHWM still covers the start.
        self._stop.wait(FIRST_READ_S)
        while not self._stop.is_set():
            read = _status_kib(pid)
            if read is None:
                return
            self.samples.append((time.monotonic() - started, read[0]))
            self.high_water_kib = max(self.high_water_kib, read[1])
            self._stop.wait(self.interval_s)

    def _wait_for_python(self, pid: int) -> bool:
        """Until the launcher (mnexec, taskset) has exec'd python: False if the process is gone
        or the sampler stopped first. Only a status read after this is python's own."""
        python = os.path.realpath(sys.executable)
        while not self._stop.is_set():
            try:
                if os.readlink(f"/proc/{pid}/exe") == python:  # OSError once it is gone
                    return True
            except OSError:
                return False
            self._stop.wait(0.05)
        return False

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def summarize(samples: list[tuple[float, int]], high_water_kib: int) -> dict[str, object]:
    """Peak, median, early and late maxima and growth (see the module docstring), in MB
    (10^6 bytes)."""
    if len(samples) < MIN_READS:
        raise RunFailed(f"membench: only {len(samples)} RSS reads; the transfer was too short "
                        f"to judge growth (give --bytes for at least "
                        f"{FIRST_READ_S + MIN_READS * SAMPLE_INTERVAL_S:g} s)")
    rss = [kib * 1024 / 1e6 for _, kib in samples]
    count = len(rss)
    early_reads = rss[count // 10:max(count // 4, count // 10 + 1)]
    early, late = max(early_reads), max(rss[count - count // 4:])
    peak = max(high_water_kib * 1024 / 1e6, max(rss))
    return {"reads": count, "interval_s": SAMPLE_INTERVAL_S, "peak_mb": round(peak, 1),
            "early_max_mb": round(early, 1), "late_max_mb": round(late, 1),
            "median_mb": round(statistics.median(rss[count // 10:]), 1),
            "growth": round(late / early, 3),
            "goal_peak_mb": GOAL_PEAK_MB, "goal_growth": GOAL_GROWTH,
            "meets_peak": peak <= GOAL_PEAK_MB, "meets_growth": late / early <= GOAL_GROWTH}


def run_membench(nbytes: int, rate_mbit: float, direction: str) -> dict[str, object]:
    topo = build_topology("two_path", {"rate_mbit": rate_mbit})
    state = RunState.create()
    sampler = RssSampler()
    # The client's own bound: a transfer slower than 10 Mbit/s has failed anyway.
    bound_s = max(60.0, nbytes * 8 / 10e6)
    try:
        with Network(topo, detect_backends(), state) as net:
            kernel_mptcp.configure(net.netns("server"), subflows=4, add_addr_accepted=4,
                                   checksum=False)
            time.sleep(0.2)
            try:
                run: BenchRun = _run_pair(net, "python", bound_s, direction, None,
                                          amount=("--bytes", str(nbytes)), watch=sampler.watch)
            finally:
                sampler.stop()
    finally:
        state.remove()
    return {"bytes": nbytes, "direction": direction, "rate_mbit_per_path": rate_mbit,
            "goodput_mbps": run.goodput_mbps, "intact": run.intact,
            "duration_s": run.client.duration_s,
            "rss": summarize(sampler.samples, sampler.high_water_kib),
            "rss_samples_kib": [kib for _, kib in sampler.samples]}


def _byte_count(text: str) -> int:
    try:
        value = parse_size(text)
    except UsageError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a byte count such as 10G, 200M "
                                         f"or 500000") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0 bytes")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bytes", type=_byte_count, default="10G",
                        help="bytes to transfer: 10G (default), 1G, 200M, 500000 ...")
    parser.add_argument("--rate-mbit", type=_positive_float, default=1000.0,
                        help="rate of each of two_path's two paths (default 1000)")
    parser.add_argument("--direction", choices=("upload", "download"), default="upload",
                        help="upload: the python client sends; download: it receives")
    parser.add_argument("--json", action="store_true",
                        help="print the result as JSON (with every RSS read)")


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise EnvironmentProblem("stack membench needs root (it builds network namespaces): "
                                 "run it with sudo")
    nbytes = args.bytes
    result = run_membench(nbytes, args.rate_mbit, args.direction)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    rss = result["rss"]
    assert isinstance(rss, dict)
    print(f"python stack, {args.direction} of {nbytes} bytes on two_path 2 x "
          f"{args.rate_mbit:g} Mbit/s: {result['goodput_mbps']} Mbit/s, "
          f"{result['duration_s']} s, intact={result['intact']}")
    print(f"RSS of the python process ({rss['reads']} reads, {SAMPLE_INTERVAL_S:g} s apart): peak "
          f"{rss['peak_mb']} MB (goal <= {GOAL_PEAK_MB:g}: "
          f"{'met' if rss['meets_peak'] else 'not met'}); median {rss['median_mb']} MB; "
          f"highest early {rss['early_max_mb']} MB, in the last quarter "
          f"{rss['late_max_mb']} MB, growth {rss['growth']} "
          f"(goal <= {GOAL_GROWTH:g}: {'met' if rss['meets_growth'] else 'not met'})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m` entry: the `testbed stack membench` command, through the CLI's error handler."""
    from testbed.cli import main as cli_main

    return cli_main(["stack", "membench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
