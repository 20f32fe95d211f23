"""Deliver a signal to a testbed command at a named stage, then account for what is left.

A stage is recognised from the command's own output (stdout and stderr, unbuffered) or from
the files it writes (a matrix cell's run.log), never from a sleep alone. Every process the
command starts inherits a marker in its environment, which is how its processes (endpoints,
inline boxes, qemu) are found afterwards; its runs are the state files whose runner carried
the marker, polled while it lives. `account` lists what is left (namespaces of those runs,
marked processes, state files and work directories, temp directories, half-written files in
the output directory, nft tables and qdiscs that appeared in the root namespace), then runs
`testbed clean` and lists it again.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[3]
TESTBED = [sys.executable, "-m", "testbed.cli"]
STATE_DIR = Path(os.environ.get("TESTBED_STATE_DIR", "/run/testbed"))
RUNS_DIR = STATE_DIR / "runs"
NETNS_DIR = Path("/run/netns")
MARKER = "TESTBED_SIGNAL_TEST"
RUN_ID = re.compile(r"\(run ([0-9a-f]{6})")
SIGNALS = {"INT": signal.SIGINT, "TERM": signal.SIGTERM, "KILL": signal.SIGKILL}

SPEC = """
name = "{name}"
seed = 5
[topology]
name = "two_path"
[topology.params]
rate_mbit = 50
delay_ms = {delay}
[[endpoints]]
role = "server"
stack = "kernel"
[[endpoints]]
role = "client"
stack = "kernel"
[traffic]
seconds = {seconds}
[mptcp]
subflows = 2
client_subflow_endpoints = true
"""

MATRIX = """
name = "signals"
seed = 5
pairings = ["kernel-kernel"]
[base.topology]
name = "two_path"
[base.topology.params]
delay_ms = 2
[base.traffic]
seconds = {seconds}
[base.mptcp]
subflows = 2
client_subflow_endpoints = true
[[middleboxes]]
name = "none"
chain = []
[[middleboxes]]
name = "second"
chain = []
[[middleboxes]]
name = "third"
chain = []
"""


def write_spec(directory: Path, *, name: str = "sig", seconds: float = 4, delay: float = 2) -> Path:
    """A kernel-kernel two_path spec; a delay puts inline processes into the network as well
    (on a kernel without netem) or a netem qdisc (with it)."""
    path = directory / f"{name}.toml"
    path.write_text(SPEC.format(name=name, seconds=seconds, delay=delay))
    return path


def write_matrix(directory: Path, *, seconds: float = 2) -> Path:
    path = directory / "signals_matrix.toml"
    path.write_text(MATRIX.format(seconds=seconds))
    return path


# --- what is there ---------------------------------------------------------------------------

def _lines(argv: list[str]) -> set[str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return {line.strip() for line in done.stdout.splitlines() if line.strip()}


# what `iptables` (nft flavour) creates the first time anything on the machine lists or adds
# a rule in the root namespace; the testbed never runs iptables there, other users do
IPTABLES_TABLES = {f"table {family} {name}" for family in ("ip", "ip6")
                   for name in ("filter", "nat", "mangle", "raw", "security")}


def root_nft_tables() -> set[str]:
    return _lines(["nft", "list", "tables"]) - IPTABLES_TABLES


def root_qdiscs() -> set[str]:
    """Non-default qdiscs of the root namespace's interfaces (handles stripped of counters)."""
    return {q for q in _lines(["tc", "qdisc", "show"])
            if not re.match(r"^qdisc (noqueue|pfifo_fast|mq|fq_codel) ", q)}


def temp_dirs() -> set[str]:
    return {str(p) for p in Path("/tmp").glob("testbed-*")}


def marked_processes(marker: str) -> list[str]:
    needle = f"{MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found.append(f"process {entry.name} {command.strip()[:80]}")
    return found


def _runner_marked(record: Path, marker: str) -> bool:
    try:
        pid = json.loads(record.read_text())["runner_pid"]
        return f"{MARKER}={marker}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (OSError, ValueError, KeyError, TypeError):
        return False


@dataclass
class Baseline:
    """The root namespace before the command started (other users of the machine stay out)."""

    nft: set[str] = field(default_factory=root_nft_tables)
    qdiscs: set[str] = field(default_factory=root_qdiscs)
    temps: set[str] = field(default_factory=temp_dirs)


def leftovers(marker: str, run_ids: set[str], baseline: Baseline, out: Path) -> list[str]:
    """Everything of the command's that still exists, one short line each."""
    left = []
    namespaces = sorted(os.listdir(NETNS_DIR)) if NETNS_DIR.is_dir() else []
    left += [f"netns {n}" for n in namespaces if any(n.startswith(f"tb-{r}-") for r in run_ids)]
    left += marked_processes(marker)
    for run_id in sorted(run_ids):
        if (RUNS_DIR / f"{run_id}.json").exists():
            left.append(f"state file {run_id}")
        if (STATE_DIR / run_id).exists():
            left.append(f"work dir {run_id}")
    left += [f"temp dir {t}" for t in sorted(temp_dirs() - baseline.temps)]
    left += [f"nft table {t}" for t in sorted(root_nft_tables() - baseline.nft)]
    left += [f"root qdisc {q}" for q in sorted(root_qdiscs() - baseline.qdiscs)]
    if out.exists():
        left += [f"partial file {p.relative_to(out)}" for p in sorted(out.rglob("*"))
                 if p.name.endswith(".tmp") or ".tmp." in p.name]
    return left


# --- driving a command -----------------------------------------------------------------------

@dataclass
class Delivery:
    """What happened to one command that got one signal at one stage."""

    command: str
    stage: str
    signal: str
    reached: bool  # the stage was seen before the command ended
    exit_code: int | None
    output: str
    run_ids: set[str]
    before_clean: list[str]
    after_clean: list[str]
    clean_output: str
    seconds: float

    def row(self) -> str:
        before = ", ".join(_short(self.before_clean)) or "nothing"
        after = ", ".join(_short(self.after_clean)) or "nothing"
        seen = "" if self.reached else " (stage not reached)"
        return (f"| {self.command} | {self.stage}{seen} | SIG{self.signal} | {self.exit_code} | "
                f"{before} | {after} |")


def _short(items: list[str]) -> list[str]:
    """Counts by kind: '3 netns, 5 process'."""
    counts: dict[str, int] = {}
    for item in items:
        kind = item.split(" ", 2)[0] if not item.startswith(("state file", "work dir", "temp dir",
                                                               "nft table", "root qdisc",
                                                               "partial file")) \
            else " ".join(item.split(" ", 2)[:2])
        counts[kind] = counts.get(kind, 0) + 1
    return [f"{n} {kind}" for kind, n in counts.items()]


# a stage is reached when `watch(output_so_far, out_dir)` says so; `settle_s` waits a little
# more (traffic really flowing) before the signal
@dataclass(frozen=True)
class Stage:
    name: str
    watch: Callable[[str, Path], bool]
    settle_s: float = 0.0


def said(text: str) -> Callable[[str, Path], bool]:
    return lambda output, _out: text in output


def building(_output: str, out: Path) -> bool:
    """Mid-build: a run's state file already names a namespace (it is recorded just before it
    is created), found from the run ids in the output or a matrix cell's run.log."""
    texts = [_output] + [log.read_text(errors="replace") for log in out.glob("cells/*/*/run.log")]
    for run_id in {found for text in texts for found in RUN_ID.findall(text)}:
        record = read_json(RUNS_DIR / f"{run_id}.json")
        if record and record.get("netns"):
            return True
    return False


def cell_log_says(text: str) -> Callable[[str, Path], bool]:
    """A matrix cell's run.log (written as the cell's run progresses) contains `text`."""
    def watch(_output: str, out: Path) -> bool:
        for log in sorted(out.glob("cells/*/*/run.log")):
            try:
                if text in log.read_text():
                    return True
            except OSError:
                continue
        return False
    return watch


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def deliver(name: str, argv: list[str], stage: Stage, sig: str, out: Path, *,
            timeout_s: float = 120.0, env: dict[str, str] | None = None) -> Delivery:
    """Start `argv`, signal it when `stage` is reached, wait for it (the process group after a
    SIGKILL is left as it is: that is what a crash leaves), then account and clean."""
    marker = uuid.uuid4().hex
    baseline = Baseline()
    environment = {**os.environ, **(env or {}), MARKER: marker, "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    # SIGINT at its default in the command whatever we inherited: a background job of a
    # non-interactive shell starts with SIGINT ignored, the command would inherit that and
    # every SIGINT combination would read as a run that ignored Ctrl-C (exit 0)
    proc = subprocess.Popen(argv, cwd=PROJECT, env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=_default_sigint)
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    chunks: list[bytes] = []
    run_ids: set[str] = set()
    reached_at: float | None = None
    signalled = False
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        for _key, _events in selector.select(timeout=0.02):
            data = proc.stdout.read()
            if data:
                chunks.append(data)
        output = b"".join(chunks).decode(errors="replace")
        run_ids |= set(RUN_ID.findall(output))
        run_ids |= {p.stem for p in RUNS_DIR.glob("*.json") if _runner_marked(p, marker)}
        if proc.poll() is not None:
            break
        if reached_at is None and stage.watch(output, out):
            reached_at = time.monotonic()
        if reached_at is not None and not signalled and time.monotonic() >= reached_at + stage.settle_s:
            proc.send_signal(SIGNALS[sig])
            signalled = True
    else:
        proc.kill()
    proc.wait(timeout=60)
    selector.close()
    rest = proc.stdout.read() or b""
    proc.stdout.close()
    output = (b"".join(chunks) + rest).decode(errors="replace")
    run_ids |= set(RUN_ID.findall(output))
    if sig == "KILL":
        time.sleep(0.5)  # what the killed runner's children do next (they live on)
    else:
        _wait_for(lambda: not marked_processes(marker), 15)
    before = leftovers(marker, run_ids, baseline, out)
    clean = subprocess.run([*TESTBED, "clean"], cwd=PROJECT, capture_output=True, text=True,
                           timeout=120, env={**os.environ, MARKER: "clean-" + marker})
    _wait_for(lambda: not marked_processes(marker), 10)
    after = leftovers(marker, run_ids, baseline, out)
    return Delivery(name, stage.name, sig, signalled, proc.returncode, output, run_ids, before, after,
                    clean.stdout + clean.stderr, time.monotonic() - started)


def _wait_for(condition: Callable[[], bool], limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
