"""Inside a VM endpoint's guest: configure the network like the host it replaces, run the
endpoint program, and leave its output, counters and CPU use in the shared state directory.

`python -m testbed.endpoints.vm_guest STATE_DIR` (started by the guest script of
testbed.endpoints.vm_kernel, after the NICs are named and addressed). Files in STATE_DIR:
  guest.json        in:  {"netconfig": NetConfig, "command": [...]}
  go                in:  a held endpoint (client) starts (after the host's server listens)
  ready             out: network configured (a held endpoint waits for `go`)
  terminate         in:  appears when the host wants the endpoint stopped (SIGTERM it)
  agent.started     out: the guest is up (boot time = its mtime - the launch)
  endpoint.out/.err out: the endpoint program's stdout (JSON report lines) and stderr
  guest-result.json out: kernel release, setup problems, counters before/after, guest CPU use
  endpoint.status   out: the program's exit status, written last
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from testbed.kernel_mptcp import read_counters
from testbed.vm_netconfig import NetConfig

POLL_S = 0.05
CPU_SAMPLE_S = 0.25
READY_FILE = "ready"  # out: network configured; a held endpoint waits for GO_FILE
GO_FILE = "go"


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat; idle and iowait count as not busy."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def busy_fraction(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    total = after[1] - before[1]
    return round((after[0] - before[0]) / total, 3) if total > 0 else None


def transfer_seconds(endpoint_out: Path) -> float | None:
    """The transfer's duration from the endpoint's last report line (None without one)."""
    try:
        lines = endpoint_out.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("duration_s"), (int, float)):
            return float(doc["duration_s"])
    return None


def window_start(samples: list[tuple[float, Any]], end: float, seconds: float | None) -> tuple[float, Any]:
    """The sample at the start of the last `seconds` before `end` (the transfer, not the
    program's start-up): the latest one at or before end - seconds, else the first."""
    if seconds is None:
        return samples[0]
    before = [sample for sample in samples if sample[0] <= end - seconds]
    return before[-1] if before else samples[0]


def apply(config: NetConfig) -> list[str]:
    """Run the configuration commands; a failing one is reported, not fatal (an older kernel may
    lack a sysctl), and ends up in result.json."""
    problems = []
    for argv in config.commands():
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            problems.append(f"{' '.join(argv)}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return problems


def write_atomic(path: Path, text: str) -> None:
    scratch = path.with_suffix(path.suffix + ".tmp")
    scratch.write_text(text)
    os.replace(scratch, path)


def run(state: Path) -> int:
    write_atomic(state / "agent.started", f"{time.time()}\n")
    spec: dict[str, Any] = json.loads((state / "guest.json").read_text())
    problems = apply(NetConfig.from_dict(spec["netconfig"]))
    for problem in problems:
        print(f"vm guest: {problem}", file=sys.stderr)
    if spec.get("hold"):
        write_atomic(state / READY_FILE, "")
        while not (state / GO_FILE).exists() and not (state / "terminate").exists():
            time.sleep(POLL_S)
    counters_before = read_counters(os.getpid())
    started = time.monotonic()
    cpu_samples = [(started, cpu_times())]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(state / "endpoint.out", "w") as out, open(state / "endpoint.err", "w") as err:
        proc = subprocess.Popen(spec["command"], stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        terminated = False
        while proc.poll() is None:
            if not terminated and (state / "terminate").exists():
                proc.send_signal(signal.SIGTERM)
                terminated = True
            if time.monotonic() - cpu_samples[-1][0] >= CPU_SAMPLE_S:
                cpu_samples.append((time.monotonic(), cpu_times()))
            time.sleep(POLL_S)
    ended = time.monotonic()
    cpu_end = cpu_times()
    seconds = ended - started
    cpu_start = window_start(cpu_samples, ended, transfer_seconds(state / "endpoint.out"))[1]
    result = {
        "release": os.uname().release,
        "setup_problems": problems,
        "counters_before": counters_before,
        "counters_after": read_counters(os.getpid()),
        "endpoint_s": round(seconds, 3),
        "guest_cpu_busy": busy_fraction(cpu_start, cpu_end),  # over the transfer
    }
    write_atomic(state / "guest-result.json", json.dumps(result))
    write_atomic(state / "endpoint.status", f"{proc.returncode}\n")
    return proc.returncode


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m testbed.endpoints.vm_guest STATE_DIR", file=sys.stderr)
        return 2
    return run(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
