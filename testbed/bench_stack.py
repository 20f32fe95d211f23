"""`python -m testbed.bench_stack`: goodput of the bundled Python stack against the kernel's.

One invocation builds two_path (2 x 100 Mbit/s, MTU 1500) once and runs, in turn, the same
upload from the client host to a kernel MPTCP server: first with a kernel MPTCP client
(kernel <-> kernel), then with the python client (python <-> kernel), each with two
subflows, `--rounds` times (alternating, default 3). It prints the median goodputs, as
measured by the receiving end, their ratio python/kernel (the project's goal: >= 0.95), each
round's ratio, the python process's CPU use (a stack at ~100% of a core is CPU-bound) and the
machine's load average, since another job on the machine lowers the python figure first.
With two or more CPUs the client and the server are pinned to different CPUs (the same for
both stacks; `--no-pin` to let the scheduler place them). `--profile` runs the python client
once more under cProfile and prints where its time goes;
`--direction download` makes the python stack the receiver instead.

    testbed stack wirebench [--seconds 10] [--rounds 3] [--direction upload] [--no-pin] [--profile] [--json]
    python -m testbed.bench_stack ...   (the same)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from testbed import kernel_mptcp
from testbed.endpoints import ENDPOINT_MODULES
from testbed.endpoints.kernel import _positive_float, _positive_int  # the endpoints' own validators
from testbed.endpoints.report import EndpointReport, parse_output
from testbed.errors import EnvironmentProblem, RunFailed
from testbed.net.build import Network
from testbed.net.state import RunState
from testbed.runner import detect_backends
from topologies import build_topology

SERVER, PORT = "10.0.100.2", 5201
GOAL_RATIO = 0.95


@dataclass(frozen=True)
class BenchRun:
    stack: str
    goodput_mbps: float  # measured by the receiver
    per_subflow_mbit: tuple[float, ...]
    intact: bool
    client: EndpointReport
    server: EndpointReport
    driver: dict[str, object] | None  # the python endpoint's driver stats (CPU, I/O)


def _run_pair(net: Network, stack: str, seconds: float, direction: str, profile: Path | None,
              extra: tuple[str, ...] = (), pin: tuple[int, int] | None = None,
              amount: tuple[str, ...] | None = None,
              watch: Callable[[int], object] | None = None) -> BenchRun:
    """One transfer, client -> kernel server. `amount` replaces ``--seconds SECONDS`` (e.g.
    ``("--bytes", "1000000000")``); `watch` is called with the client's pid once it runs."""
    client_prefix, server_prefix = (
        (["taskset", "-c", str(pin[0])], ["taskset", "-c", str(pin[1])]) if pin else ([], []))
    server = net.popen("server", [*server_prefix, sys.executable, "-m", "testbed.endpoints.kernel",
                                  "server", "--listen", f"0.0.0.0:{PORT}", "--timeout", "15"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert server.stdout is not None
    line = server.stdout.readline()
    if '"listening"' not in line:
        server.kill()
        raise RunFailed(f"wirebench: the kernel server did not start: {line!r}")
    module = ["-m", ENDPOINT_MODULES[stack]]
    if stack == "python":
        extra = (*extra, "--driver-stats")
    if profile is not None:
        module = ["-m", "cProfile", "-o", str(profile), *module]
    client = net.popen("client", [*client_prefix, sys.executable, *module, "client",
                                  "--connect", f"{SERVER}:{PORT}",
                                  *(amount or ("--seconds", str(seconds))),
                                  "--direction", direction, "--timeout", "15", *extra],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if watch is not None:
        watch(client.pid)
    client_out, client_err = client.communicate(timeout=seconds + 60)
    server_out, server_err = server.communicate(timeout=30)
    _, client_reports = parse_output(client_out)
    _, server_reports = parse_output(server_out)
    if not client_reports or not server_reports:
        raise RunFailed(f"wirebench: {stack} run gave no report (client stderr: {client_err[-800:]}; "
                           f"server: {server_err[-800:]})")
    c, s = client_reports[-1], server_reports[-1]
    receiver = s if direction == "upload" else c
    sender = c if direction == "upload" else s
    duration = max(sender.duration_s, 1e-9)
    rates = tuple(round(sub.bytes_acked * 8 / duration / 1e6, 1) for sub in sender.subflows)
    return BenchRun(stack, receiver.goodput_mbps, rates, sender.sha256 == receiver.sha256 and
                    sender.bytes == receiver.bytes, c, s, _driver_stats(client_err))


def _driver_stats(stderr: str) -> dict[str, object] | None:
    for line in reversed(stderr.splitlines()):
        if line.startswith("{") and '"event": "driver"' in line:
            value = json.loads(line)
            return value if isinstance(value, dict) else None
    return None


def _profile_summary(path: Path, lines: int = 25) -> str:
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("tottime").print_stats(lines)
    return out.getvalue()


def _summary(run: BenchRun) -> dict[str, object]:
    entry: dict[str, object] = {
        "goodput_mbps": run.goodput_mbps, "per_subflow_mbit": run.per_subflow_mbit,
        "intact": run.intact, "subflows": len(run.client.subflows),
        "retransmitted_bytes": sum(sub.bytes_retrans for report in (run.client, run.server)
                                   for sub in report.subflows)}
    if run.driver is not None:
        entry["driver"] = run.driver
    return entry


def _load_average() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def run_bench(seconds: float, direction: str, profile: bool, rounds: int = 3,
              pin: tuple[int, int] | None = None) -> dict[str, object]:
    """`rounds` alternations of kernel and python runs on one build of two_path: the medians
    and their ratio are the figure, so one run disturbed by another job does not decide it.
    `pin` = (client CPU, server CPU) for both stacks' endpoints alike (as iperf3 -A does): an
    unpinned client that the scheduler puts on the server's CPU loses up to a tenth."""
    topo = build_topology("two_path", {"rate_mbit": 100.0})
    state = RunState.create()
    results: dict[str, object] = {"seconds": seconds, "direction": direction, "rate_mbit_per_path": 100,
                                  "rounds": rounds, "pinned_cpus": list(pin) if pin else None,
                                  "load_average_before": _load_average()}
    try:
        with Network(topo, detect_backends(), state) as net, tempfile.TemporaryDirectory() as tmp:
            kernel_mptcp.configure(net.netns("server"), subflows=4, add_addr_accepted=4, checksum=False)
            kernel_mptcp.configure(net.netns("client"), subflows=4, add_addr_accepted=4, checksum=False,
                                   subflow_endpoints=(("10.0.2.1", "client-eth1"),))
            results["kernel_congestion_control"] = subprocess.run(
                ["ip", "netns", "exec", net.netns("client"), "sysctl", "-n",
                 "net.ipv4.tcp_congestion_control"], capture_output=True, text=True, check=False,
            ).stdout.strip() or None
            time.sleep(0.2)
            runs: dict[str, list[BenchRun]] = {"kernel": [], "python": []}
            for _ in range(rounds):
                for stack in ("kernel", "python"):
                    runs[stack].append(_run_pair(net, stack, seconds, direction, None, pin=pin))
            profile_path = Path(tmp) / "python.prof" if profile else None
            if profile_path is not None:  # a separate run: cProfile slows the stack down
                profiled = _run_pair(net, "python", seconds, direction, profile_path, pin=pin)
                results["profiled_goodput_mbps"] = profiled.goodput_mbps
            for stack, stack_runs in runs.items():
                median_run = sorted(stack_runs, key=lambda run: run.goodput_mbps)[len(stack_runs) // 2]
                results[stack] = {**_summary(median_run), "median_of": len(stack_runs),
                                  "all_goodputs_mbps": [run.goodput_mbps for run in stack_runs],
                                  "all_intact": all(run.intact for run in stack_runs)}
            kernel_median = statistics.median(run.goodput_mbps for run in runs["kernel"])
            python_median = statistics.median(run.goodput_mbps for run in runs["python"])
            results["ratio"] = round(python_median / kernel_median, 3) if kernel_median else None
            results["ratio_per_round"] = [
                round(p.goodput_mbps / k.goodput_mbps, 3) if k.goodput_mbps else None
                for k, p in zip(runs["kernel"], runs["python"], strict=True)]
            if profile_path is not None and profile_path.exists():
                results["profile"] = _profile_summary(profile_path)
    finally:
        state.remove()
    results["load_average_after"] = _load_average()
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=_positive_float, default=10.0, help="length of each transfer")
    parser.add_argument("--rounds", type=_positive_int, default=3,
                        help="alternations of kernel and python runs; medians are compared")
    parser.add_argument("--direction", choices=("upload", "download"), default="upload",
                        help="upload: the python client sends; download: it receives")
    parser.add_argument("--profile", action="store_true", help="one more python run under cProfile")
    parser.add_argument("--no-pin", action="store_true",
                        help="let the scheduler place the endpoints (default with 2+ CPUs: client "
                             "on CPU 0, server on CPU 1, for both stacks)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise EnvironmentProblem("stack wirebench needs root (it builds network namespaces): "
                                 "run it with sudo")
    cpus = sorted(os.sched_getaffinity(0))
    pin = None if args.no_pin or len(cpus) < 2 else (cpus[0], cpus[1])
    result = run_bench(args.seconds, args.direction, args.profile, args.rounds, pin)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"two_path 2 x 100 Mbit/s, {args.direction}, {args.seconds:g} s per run, median of "
          f"{args.rounds}; endpoints pinned to CPUs {result['pinned_cpus'] or 'no'}; "
          f"kernel congestion control {result['kernel_congestion_control']}; "
          f"load average {result['load_average_before']} before, {result['load_average_after']} after")
    for stack in ("kernel", "python"):
        entry = result[stack]
        assert isinstance(entry, dict)
        print(f"{stack:>6} <-> kernel: {entry['goodput_mbps']:8.1f} Mbit/s  "
              f"(runs {entry['all_goodputs_mbps']})  per subflow {entry['per_subflow_mbit']}  "
              f"intact={entry['all_intact']}  retransmitted {entry['retransmitted_bytes']} B")
        driver = entry.get("driver")
        if isinstance(driver, dict) and driver.get("cpu"):
            cpu = driver["cpu"]
            print(f"{'':>6}  python process CPU: {cpu['busy_pct']}% of one core "
                  f"(user {cpu['user_s']} s, system {cpu['system_s']} s in {cpu['wall_s']} s)")
    print(f"ratio python/kernel: {result['ratio']}  per round {result['ratio_per_round']}  "
          f"(goal >= {GOAL_RATIO})")
    if "profile" in result:
        print(result["profile"])
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m` entry: the `testbed stack wirebench` command, through the one CLI error handler."""
    from testbed.cli import main as cli_main

    return cli_main(["stack", "wirebench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
