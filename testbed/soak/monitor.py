"""Watching a soak from outside: every python process of the run sampled once a second (RSS and
open descriptors, read from /proc), and a census of what the run may leave behind, taken
before the network is built and after it is torn down.

The processes are found, not registered: each second every process whose network namespace is
one of the run's (endpoints, inline bumps, anything else they start) and whose program is
python is sampled, plus the soak's own process. Forks of the soak itself (pyroute2 enters
namespaces through them) live for milliseconds and are left out.

Samples go straight to a CSV file, not to memory: the soak process is itself judged by its RSS,
and thirty minutes of samples of five processes kept as tuples grew it by about 2 MB.
"""

from __future__ import annotations

import contextlib
import csv
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from testbed.net.state import NETNS_DIR, netns_inode

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
SOAK_LABEL = "testbed soak"  # the soak's own process in the samples


SAMPLE_COLUMNS = ("t_s", "pid", "start_ticks", "label", "node", "age_s", "rss_kib", "fds")


@dataclass
class ProcessSeries:
    """One process's samples: (seconds since the soak started, its age in seconds, RSS in
    KiB, open descriptors)."""

    pid: int
    label: str
    node: str
    samples: list[tuple[float, float, int, int]] = field(default_factory=list)
    exited_at_s: float | None = None


def _age_s(pid: int) -> tuple[float, int] | None:
    """Seconds since the process started and its start time in clock ticks since boot (from
    /proc/PID/stat and /proc/uptime); None for a process gone or exited."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    if fields[0] == "Z":
        return None
    start_ticks = int(fields[19])
    return uptime - start_ticks / CLOCK_TICKS, start_ticks


def _rss_kb(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB
    except (OSError, IndexError, ValueError):
        return None


def fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def describe_command(argv: list[str]) -> str | None:
    """"testbed.inline", "testbed.endpoints.kernel server", ... for a python program; None
    for anything else."""
    if not argv or "python" not in Path(argv[0]).name:
        return None
    if "-m" in argv[:-1]:
        module_at = argv.index("-m") + 1
        rest = argv[module_at + 1:module_at + 2]
        role = rest[0] if rest and rest[0] in ("client", "server") else ""
        return f"{argv[module_at]} {role}".strip()
    return " ".join(Path(part).name for part in argv[1:2]) or "python"


class ProcessSampler:
    """A thread sampling the run's python processes each `interval_s` until stopped, appending
    every sample to `samples_path` (CSV, SAMPLE_COLUMNS); only who was seen stays in memory."""

    def __init__(self, namespaces: dict[str, str], samples_path: Path, *,
                 interval_s: float = 1.0) -> None:
        self.namespaces = namespaces  # node -> namespace name
        self.samples_path = samples_path
        self.interval_s = interval_s
        self.series: dict[tuple[int, int], ProcessSeries] = {}  # (pid, start ticks) -> no samples
        self.started = time.monotonic()
        self._own_argv = _cmdline(os.getpid())
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        self._thread = threading.Thread(target=self._loop, name="soak-sampler", daemon=True)

    def start(self) -> None:
        self._file = self.samples_path.open("w", newline="")
        csv.writer(self._file).writerow(SAMPLE_COLUMNS)
        self.started = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def snapshot(self) -> list[ProcessSeries]:
        """Every process seen, its samples read back from the file."""
        with self._lock:
            if self._file is not None:
                self._file.flush()
            found = {key: ProcessSeries(s.pid, s.label, s.node, [], s.exited_at_s)
                     for key, s in self.series.items()}
        with self.samples_path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                series = found.get((int(row["pid"]), int(row["start_ticks"])))
                if series is not None:
                    series.samples.append((float(row["t_s"]), float(row["age_s"]),
                                           int(row["rss_kib"]), int(row["fds"])))
        return list(found.values())

    def _loop(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            self.sample_once()
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - began)))

    def _run_processes(self) -> list[tuple[int, str, str]]:
        """(pid, label, node) of every python process of the run, the soak included."""
        inodes = {ino: node for node, name in self.namespaces.items()
                  if (ino := netns_inode(name)) is not None}
        found = [(os.getpid(), SOAK_LABEL, "root")]
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                node = inodes.get(os.stat(entry / "ns" / "net").st_ino)
            except OSError:
                continue
            if node is None:
                continue
            pid = int(entry.name)
            argv = _cmdline(pid)
            label = describe_command(argv)
            if label is None or argv == self._own_argv:
                continue
            found.append((pid, label, node))
        return found

    def sample_once(self) -> None:
        now = time.monotonic() - self.started
        seen: set[tuple[int, int]] = set()
        rows = []
        for pid, label, node in self._run_processes():
            started, rss, fds = _age_s(pid), _rss_kb(pid), fd_count(pid)
            if started is None or rss is None or fds is None:
                continue
            age, start_ticks = started
            key = (pid, start_ticks)  # a reused pid is another process
            seen.add(key)
            rows.append((round(now, 2), pid, start_ticks, label, node, round(age, 2), rss, fds))
        with self._lock:
            for row in rows:
                self.series.setdefault((row[1], row[2]), ProcessSeries(row[1], row[3], row[4]))
            for key, series in self.series.items():
                if key not in seen and series.exited_at_s is None:
                    series.exited_at_s = round(now, 2)
            if self._file is not None:
                csv.writer(self._file).writerows(rows)
                self._file.flush()


def _marked_processes(variable: str, value: str) -> list[str]:
    needle = f"{variable}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes().split(b"\0") and \
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(f"{entry.name} {' '.join(_cmdline(int(entry.name)))[:100]}")
    return found


def _nft_tables() -> list[str]:
    try:
        done = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return sorted(line.strip() for line in done.stdout.splitlines() if line.strip())


def census(run_id: str, interface_names: set[str], marker: tuple[str, str]) -> dict[str, Any]:
    """What of this run exists now: its namespaces, root-namespace interfaces named like the
    topology's, root-namespace nft tables, processes carrying the run's marker, and the soak
    process's own open descriptors."""
    try:
        namespaces = sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(f"tb-{run_id}-"))
    except OSError:
        namespaces = []
    try:
        interfaces = sorted(set(os.listdir("/sys/class/net")) & interface_names)
    except OSError:
        interfaces = []
    return {"namespaces": namespaces, "interfaces": interfaces, "nft_tables": _nft_tables(),
            "processes": _marked_processes(*marker), "soak_fds": fd_count(os.getpid())}
