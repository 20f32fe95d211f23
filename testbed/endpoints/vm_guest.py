"""Inside a VM endpoint's guest: configure the network like the host it replaces, run the
endpoint program, and leave its output, counters and CPU use in the shared state directory.

`python -m testbed.endpoints.vm_guest STATE_DIR` (started by the guest script of
testbed.endpoints.vm_kernel, after the NICs are named and addressed) runs one endpoint job.
`python -m testbed.endpoints.vm_guest --serve STATE_DIR` is the persistent agent of a reused VM
(testbed.vm_pool): it runs one job after another, each named by the path written to
STATE_DIR/job, each in a fresh network namespace of the guest that its NICs move into (found by
MAC, named and addressed as the job says) and leave again afterwards, so no per-namespace state
(MPTCP endpoints and limits, sysctls, TCP metrics, MPTCP's blackhole detection) carries from
one cell to the next: the same as a fresh host namespace per run. Files in a job directory:
  guest.json        in:  {"netconfig": NetConfig, "command": [...], "hold": bool,
                         "nics": [{"mac", "name", "addresses"}] (agent jobs only)}
  go                in:  a held endpoint (client) starts (after the host's server listens)
  ready             out: network configured (a held endpoint waits for `go`)
  terminate         in:  appears when the host wants the endpoint stopped (SIGTERM it)
  agent.started     out: the guest is up (boot time = its mtime - the launch)
  endpoint.out/.err out: the endpoint program's stdout (JSON report lines) and stderr
  guest-result.json out: kernel release, setup problems, counters before/after, guest CPU use
  endpoint.status   out: the program's exit status, written last
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from testbed.kernel_mptcp import read_counters
from testbed.vm_netconfig import NetConfig

POLL_S = 0.05
CPU_SAMPLE_S = 0.25
READY_FILE = "ready"  # out: network configured; a held endpoint waits for GO_FILE
GO_FILE = "go"
JOB_FILE = "job"  # in (agent): the directory of the next job
DONE_FILE = "done"  # out (agent): the directory of the last job finished, namespace removed
STOP_FILE = "stop"  # in (agent): serve no more jobs


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


def apply(config: NetConfig, wrap: list[str] | None = None) -> list[str]:
    """Run the configuration commands (prefixed by `wrap`, a namespace); a failing one is
    reported, not fatal (an older kernel may lack a sysctl), and ends up in result.json."""
    problems = []
    for argv in config.commands():
        done = subprocess.run([*(wrap or []), *argv], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            problems.append(f"{' '.join(argv)}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return problems


def write_atomic(path: Path, text: str) -> None:
    scratch = path.with_suffix(path.suffix + ".tmp")
    scratch.write_text(text)
    os.replace(scratch, path)


def run(state: Path) -> int:
    """The one-shot job of a VM booted for one endpoint (NICs already set up by the script)."""
    write_atomic(state / "agent.started", f"{time.time()}\n")
    return run_job(state, [], lambda: read_counters(os.getpid()))


def run_job(state: Path, wrap: list[str], counters: Callable[[], dict[str, int]],
            configured: list[str] | None = None) -> int:
    """Configure (unless done: `configured` holds its problems), hold until `go` if asked, run
    the endpoint (prefixed by `wrap`, the job's namespace) and leave the results in `state`."""
    spec: dict[str, Any] = json.loads((state / "guest.json").read_text())
    problems = apply(NetConfig.from_dict(spec["netconfig"]), wrap) if configured is None else configured
    for problem in problems:
        print(f"vm guest: {problem}", file=sys.stderr)
    if spec.get("hold"):
        write_atomic(state / READY_FILE, "")
        while not (state / GO_FILE).exists() and not (state / "terminate").exists():
            if not state.exists():  # the host's run is over (its work directory is gone)
                raise JobAbandoned(str(state))
            time.sleep(POLL_S)
    counters_before = counters()
    started = time.monotonic()
    cpu_samples = [(started, cpu_times())]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    out = _open_in_job(state, "endpoint.out")
    try:
        err = _open_in_job(state, "endpoint.err")
    except BaseException:
        out.close()
        raise
    with out, err:
        proc = subprocess.Popen([*wrap, *spec["command"]], stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env=env)
        terminated = False
        while proc.poll() is None:
            if not terminated and (state / "terminate").exists():
                proc.send_signal(signal.SIGTERM)
                terminated = True
            if not state.exists():  # the host's run is over: nobody reads this job any more
                proc.kill()
                proc.wait()
                raise JobAbandoned(str(state))
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
        "counters_after": counters(),
        "endpoint_s": round(seconds, 3),
        "guest_cpu_busy": busy_fraction(cpu_start, cpu_end),  # over the transfer
    }
    write_atomic(state / "guest-result.json", json.dumps(result))
    write_atomic(state / "endpoint.status", f"{proc.returncode}\n")
    return proc.returncode


def _open_in_job(state: Path, name: str) -> TextIO:
    """A job file opened for writing; the job directory removed under us (the host's run ended
    between our last check and this open) is the same abandonment as one seen by the loop."""
    try:
        return open(state / name, "w")
    except FileNotFoundError:
        if not state.exists():
            raise JobAbandoned(str(state)) from None
        raise


# --- the persistent agent of a reused VM (testbed.vm_pool) -------------------------------------

class JobAbandoned(Exception):
    """The job's directory vanished: the host's run ended without waiting for the job."""


def parked_name(mac: str) -> str:
    """A NIC's name between jobs, from its MAC (unique, so no job's names collide with it)."""
    return "tb" + mac.replace(":", "")[-8:].lower()


def device_with_mac(mac: str) -> str | None:
    """The guest's (init namespace) interface with this MAC."""
    for entry in Path("/sys/class/net").iterdir():
        try:
            if (entry / "address").read_text().strip().lower() == mac.lower():
                return entry.name
        except OSError:
            continue
    return None


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, text=True)


def batch_lines(nics: list[dict[str, Any]], config: NetConfig) -> list[str]:
    """The `ip -batch` lines that set a job's namespace up like the host's: its NICs named,
    addressed and up, then routes, rules and MPTCP (one `ip` process: each is seconds under TCG)."""
    lines = ["link set lo up"]
    for nic in nics:
        lines.append(f"link set {nic['device']} name {nic['name']}")
        lines += [f"addr add {address} dev {nic['name']}" for address in nic["addresses"]]
        lines.append(f"link set {nic['name']} up")
    return lines + [" ".join(argv[1:]) for argv in config.commands() if argv[0] == "ip"]


def batch_problems(lines: list[str], stderr: str) -> list[str]:
    """`ip -force -batch` stderr -> one problem per failed line ("Command failed -:N")."""
    problems, said = [], []
    for text in stderr.splitlines():
        if text.startswith("Command failed -:"):
            number = int(text.rsplit(":", 1)[1])
            problems.append(f"ip {lines[number - 1]}: {' '.join(said) or 'failed'}")
            said = []
        elif text.strip():
            said.append(text.strip())
    return problems


def enter_namespace(namespace: str, nics: list[dict[str, Any]], config: NetConfig) -> list[str]:
    """A fresh namespace holding the job's NICs (found by MAC), set up like the host's;
    returns the commands the guest's kernel refused."""
    _ip("netns", "add", namespace)
    located = []
    for nic in nics:
        device = device_with_mac(nic["mac"])
        if device is None:
            raise RuntimeError(f"no NIC with MAC {nic['mac']}")
        _ip("link", "set", device, "down", "netns", namespace)
        located.append({**nic, "device": device})
    problems = []
    if config.sysctls:
        done = subprocess.run(["ip", "netns", "exec", namespace, "sysctl", "-q", "-w",
                               *(f"{key}={value}" for key, value in config.sysctls.items())],
                              capture_output=True, text=True, check=False)
        problems += [f"sysctl: {line.strip()}" for line in done.stderr.splitlines() if line.strip()]
    lines = batch_lines(located, config)
    done = subprocess.run(["ip", "-n", namespace, "-force", "-batch", "-"], input="\n".join(lines) + "\n",
                          capture_output=True, text=True, check=False)
    return problems + batch_problems(lines, done.stderr)


def leave_namespace(namespace: str, nics: list[dict[str, Any]]) -> None:
    """Every process of the job's namespace killed, its NICs back (neutrally named), it deleted."""
    done = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False)
    for pid in done.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    for nic in nics:
        subprocess.run(["ip", "-n", namespace, "link", "set", nic["name"], "down", "name",
                        parked_name(nic["mac"]), "netns", "1"], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)


def serve_one(job: Path, number: int) -> None:
    """One job of the agent; any failure is reported in the job directory, never fatal."""
    namespace = f"tbjob{number}"
    nics: list[dict[str, Any]] = []
    holder = None
    try:
        write_atomic(job / "agent.started", f"{time.time()}\n")  # the host measures the hand-over
        spec = json.loads((job / "guest.json").read_text())
        nics = spec.get("nics", [])
        problems = enter_namespace(namespace, nics, NetConfig.from_dict(spec["netconfig"]))
        # a process that lives in the namespace: the counters are read through its /proc entry
        holder = subprocess.Popen(["ip", "netns", "exec", namespace, "sleep", "86400"],
                                  stdin=subprocess.DEVNULL)
        while not Path(f"/proc/{holder.pid}/net/netstat").exists():
            time.sleep(POLL_S)
        run_job(job, ["ip", "netns", "exec", namespace], lambda: read_counters(holder.pid), problems)
    except JobAbandoned:
        pass
    except Exception as exc:  # the host sees the job end with an error, and the agent serves on
        with contextlib.suppress(OSError):
            (job / "endpoint.err").write_text(f"vm agent: {type(exc).__name__}: {exc}\n")
            write_atomic(job / "endpoint.status", "1\n")
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        leave_namespace(namespace, nics)


def serve(state: Path) -> int:
    """Run every job written to STATE/job, one at a time, until STATE/stop appears."""
    write_atomic(state / "agent.started", f"{time.time()}\n")
    number, last = 0, ""
    while not (state / STOP_FILE).exists():
        try:
            current = (state / JOB_FILE).read_text().strip()
        except FileNotFoundError:
            current = ""
        if current and current != last:
            last, number = current, number + 1
            serve_one(Path(current), number)
            write_atomic(state / DONE_FILE, f"{current}\n")
        time.sleep(POLL_S)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if args[:1] == ["--serve"] and len(args) == 2:
        return serve(Path(args[1]))
    if len(args) != 1:
        print("usage: python -m testbed.endpoints.vm_guest [--serve] STATE_DIR", file=sys.stderr)
        return 2
    return run(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
