"""`python -m testbed.bench_stack`: goodput of the bundled Python stack against the kernel's.

One invocation builds two_path (2 x 100 Mbit/s, MTU 1500) once and runs, in turn, the same
upload from the client host to a kernel MPTCP server: first with a kernel MPTCP client
(kernel <-> kernel), then with the python client (python <-> kernel), each with two
subflows. It prints both goodputs, as measured by the receiving kernel server, and the
ratio python/kernel (the project's goal: >= 0.95). `--profile` runs the python client under
cProfile and prints where its time goes; `--direction download` makes the python stack the
receiver instead.

    python -m testbed.bench_stack [--seconds 10] [--direction upload] [--profile]
"""

from __future__ import annotations

import argparse
import io
import json
import pstats
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from testbed import kernel_mptcp
from testbed.endpoints.report import EndpointReport, parse_output
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
              extra: tuple[str, ...] = ()) -> BenchRun:
    server = net.popen("server", [sys.executable, "-m", "testbed.endpoints.kernel", "server",
                                  "--listen", f"0.0.0.0:{PORT}", "--timeout", "15"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert server.stdout is not None
    line = server.stdout.readline()
    if '"listening"' not in line:
        server.kill()
        raise RuntimeError(f"kernel server did not start: {line!r}")
    module = ["-m", f"testbed.endpoints.{stack}"]
    if stack == "python":
        extra = (*extra, "--driver-stats")
    if profile is not None:
        module = ["-m", "cProfile", "-o", str(profile), *module]
    client = net.popen("client", [sys.executable, *module, "client", "--connect", f"{SERVER}:{PORT}",
                                  "--seconds", str(seconds), "--direction", direction, "--timeout", "15",
                                  *extra],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client_out, client_err = client.communicate(timeout=seconds + 60)
    server_out, server_err = server.communicate(timeout=30)
    _, client_reports = parse_output(client_out)
    _, server_reports = parse_output(server_out)
    if not client_reports or not server_reports:
        raise RuntimeError(f"{stack}: no report (client stderr: {client_err[-800:]}; "
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


def run_bench(seconds: float, direction: str, profile: bool) -> dict[str, object]:
    topo = build_topology("two_path", {"rate_mbit": 100.0})
    state = RunState.create()
    results: dict[str, object] = {"seconds": seconds, "direction": direction, "rate_mbit_per_path": 100}
    try:
        with Network(topo, detect_backends(), state) as net, tempfile.TemporaryDirectory() as tmp:
            kernel_mptcp.configure(net.netns("server"), subflows=4, add_addr_accepted=4, checksum=False)
            kernel_mptcp.configure(net.netns("client"), subflows=4, add_addr_accepted=4, checksum=False,
                                   subflow_endpoints=(("10.0.2.1", "client-eth1"),))
            time.sleep(0.2)
            kernel = _run_pair(net, "kernel", seconds, direction, None)
            python = _run_pair(net, "python", seconds, direction, None)
            profile_path = Path(tmp) / "python.prof" if profile else None
            if profile_path is not None:  # a separate run: cProfile slows the stack down
                profiled = _run_pair(net, "python", seconds, direction, profile_path)
                results["profiled_goodput_mbps"] = profiled.goodput_mbps
            for run in (kernel, python):
                results[run.stack] = {"goodput_mbps": run.goodput_mbps,
                                      "per_subflow_mbit": run.per_subflow_mbit,
                                      "intact": run.intact, "subflows": len(run.client.subflows),
                                      "retransmitted_bytes": sum(
                                          sub.bytes_retrans for report in (run.client, run.server)
                                          for sub in report.subflows)}
                if run.driver is not None:
                    results[run.stack]["driver"] = run.driver
            ratio = python.goodput_mbps / kernel.goodput_mbps if kernel.goodput_mbps else None
            results["ratio"] = None if ratio is None else round(ratio, 3)
            if profile_path is not None and profile_path.exists():
                results["profile"] = _profile_summary(profile_path)
    finally:
        state.remove()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.bench_stack", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--direction", choices=("upload", "download"), default="upload")
    parser.add_argument("--profile", action="store_true", help="cProfile the python client")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    result = run_bench(args.seconds, args.direction, args.profile)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for stack in ("kernel", "python"):
        entry = result[stack]
        assert isinstance(entry, dict)
        print(f"{stack:>6} <-> kernel: {entry['goodput_mbps']:8.1f} Mbit/s  "
              f"per subflow {entry['per_subflow_mbit']}  intact={entry['intact']}  "
              f"retransmitted {entry['retransmitted_bytes']} B")
        driver = entry.get("driver")
        if isinstance(driver, dict) and driver.get("cpu"):
            cpu = driver["cpu"]
            print(f"{'':>6}  python client CPU: {cpu['busy_pct']}% of one core "
                  f"(user {cpu['user_s']} s, system {cpu['system_s']} s in {cpu['wall_s']} s)")
    ratio = result["ratio"]
    print(f"ratio python/kernel: {ratio}  (goal >= {GOAL_RATIO})")
    if "profile" in result:
        print(result["profile"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
