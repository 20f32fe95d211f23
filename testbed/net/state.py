"""What a run created, tracked by id on disk, so teardown and `testbed clean` remove exactly that.

Mininet cleans up with `mn -c`, killing processes by name; here every run writes a state file
under /run/testbed/runs/ BEFORE it creates anything, naming its network namespaces (all called
`tb-<run id>-<node>`) and the processes it started. Processes are found for killing by the
network namespace they live in, never by name, so nothing outside the run is touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from testbed.command import run_command

STATE_DIR = Path(os.environ.get("TESTBED_STATE_DIR", "/run/testbed"))
RUNS_DIR = STATE_DIR / "runs"
NETNS_DIR = Path("/run/netns")
NETNS_PATTERN = re.compile(r"^tb-([0-9a-f]{6})-[A-Za-z0-9_]+$")
# testbed.inline.lab's three-namespace line (the inline benchmarks, `testbed bench`): its tag is
# the creating pid modulo 100000, then four hex digits
LAB_NETNS_PATTERN = re.compile(r"^tbtest-([0-9]{1,5})[0-9a-f]{4}-[abc]$")
# a `<id>.tmp` state copy younger than this may be a live run's save in progress
_HALF_SAVED_GRACE_S = 10.0


def new_run_id() -> str:
    return secrets.token_hex(3)


def work_dir_of(run_id: str) -> Path:
    """Where a run keeps its scratch files (inline configs, control sockets, samples)."""
    return STATE_DIR / run_id


@dataclass
class RunState:
    """The resources of one run, persisted after every change."""

    run_id: str
    runner_pid: int
    started: float
    netns: list[str] = field(default_factory=list)
    work_dir: str = ""
    # process groups started in their own session (a VM's vng and qemu), which neither a
    # namespace nor the runner's death ends: [group id, its leader's start time in ticks]
    process_groups: list[list[int]] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return RUNS_DIR / f"{self.run_id}.json"

    @classmethod
    def create(cls, run_id: str | None = None) -> RunState:
        """Record a new run (its id drawn now unless given) before it creates anything."""
        RUNS_DIR.mkdir(parents=True, exist_ok=True)
        state = cls(run_id or new_run_id(), os.getpid(), time.time())
        state.work_dir = str(work_dir_of(state.run_id))
        Path(state.work_dir).mkdir(parents=True, exist_ok=True)
        state.save()
        return state

    def netns_name(self, node: str) -> str:
        return f"tb-{self.run_id}-{node}"

    def add_netns(self, name: str) -> None:
        self.netns.append(name)
        self.save()

    def add_process_group(self, pgid: int) -> None:
        self.process_groups.append([pgid, process_start_ticks(pgid) or 0])
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(self.path)

    def remove(self) -> None:
        if os.getpid() != self.runner_pid:  # a forked helper (pyroute2) must not clean up
            return
        remove_run_files(self.run_id, self.work_dir)


def remove_run_files(run_id: str, work_dir: str) -> None:
    """The state file (and a half-saved copy of it) and the work directory (inline configs,
    control sockets, samples)."""
    for name in (f"{run_id}.json", f"{run_id}.tmp"):
        with contextlib.suppress(FileNotFoundError):
            (RUNS_DIR / name).unlink()
    if work_dir:
        shutil.rmtree(work_dir, ignore_errors=True)


def process_start_ticks(pid: int) -> int | None:
    """When a process started (clock ticks after boot): tells a reused pid from the original."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def kill_process_groups(groups: list) -> list[str]:
    """SIGKILL each recorded process group that is still the one recorded: its leader alive
    with the recorded start time, or gone while members remain (a group id is not reused
    while any member lives). Returns what was killed."""
    killed = []
    for entry in groups:
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(v, int) for v in entry)):
            continue
        pgid, started = entry
        if pgid <= 1:
            continue
        now = process_start_ticks(pgid)
        if now is not None and now != started:
            continue  # the pid names another process now
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
        killed.append(f"process group {pgid}")
    return killed


def netns_inode(name: str) -> int | None:
    try:
        return os.stat(NETNS_DIR / name).st_ino
    except FileNotFoundError:
        return None


def pids_in_netns(name: str) -> list[int]:
    """Every process whose network namespace is the named one."""
    inode = netns_inode(name)
    if inode is None:
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry / "ns" / "net").st_ino == inode:
                pids.append(int(entry.name))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return pids


def kill_netns_processes(names: list[str], grace_s: float = 1.0) -> None:
    """SIGTERM (and SIGHUP, which interactive shells such as Mininet's obey) every process in
    the namespaces at once, then SIGKILL whatever is left after `grace_s`."""
    pids = [pid for name in names for pid in pids_in_netns(name)]
    for pid in pids:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    deadline = time.monotonic() + grace_s
    while pids and time.monotonic() < deadline:
        time.sleep(0.02)
        pids = [pid for pid in pids if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return True


def delete_netns(names: list[str]) -> list[str]:
    """Kill everything in the namespaces and remove their names; the kernel then frees their
    veths, qdiscs and nft tables with them. Returns one line per namespace that is still there
    (with what `ip netns delete` and the fallback said), for the caller to report."""
    kill_netns_processes([n for n in names if netns_inode(n) is not None])
    problems = []
    for name in names:
        if netns_inode(name) is None:
            continue
        deleted = run_command(["ip", "netns", "delete", name], check=False)
        if netns_inode(name) is None:
            continue
        # a busy mount: unmount lazily and unlink
        unmounted = run_command(["umount", "-l", str(NETNS_DIR / name)], check=False)
        unlink_error = ""
        try:
            (NETNS_DIR / name).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            unlink_error = f"; unlink: {exc.strerror or exc}"
        if netns_inode(name) is not None:
            said = (deleted.stderr or "").strip() or f"exit {deleted.returncode}"
            problems.append(f"namespace {name} could not be deleted: ip netns delete: {said}; "
                            f"umount -l: {(unmounted.stderr or '').strip() or unmounted.returncode}"
                            f"{unlink_error}")
    return problems


def runner_alive(state: dict) -> bool:
    pid = state.get("runner_pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # pid reuse: the process must have started before the run did
    try:
        started = Path(f"/proc/{pid}").stat().st_mtime
    except FileNotFoundError:
        return False
    return started <= state.get("started", 0) + 5


def clean(*, include_live: bool = False) -> list[str]:
    """Remove what crashed or killed runs left behind; returns what was removed.

    Runs whose runner is still alive are left alone unless include_live is set.
    """
    removed: list[str] = []
    live_ids: set[str] = set()
    if RUNS_DIR.is_dir():
        for path in _state_files(include_live):
            try:
                state = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                path.unlink(missing_ok=True)
                continue
            if not isinstance(state, dict):
                path.unlink(missing_ok=True)
                continue
            if runner_alive(state) and not include_live:
                live_ids.add(state.get("run_id", ""))
                continue
            removed += kill_process_groups(state.get("process_groups", []))
            present = [n for n in state.get("netns", []) if netns_inode(n) is not None]
            _say(delete_netns(present))
            removed += [f"netns {n}" for n in present if netns_inode(n) is None]
            remove_run_files(str(state.get("run_id", path.stem)), str(state.get("work_dir", "")))
            removed.append(f"run {state.get('run_id')}")
    # namespaces named like ours whose state file was lost (crash between create and save)
    if NETNS_DIR.is_dir():
        orphans = [e.name for e in sorted(NETNS_DIR.iterdir())
                   if (m := NETNS_PATTERN.match(e.name)) and m.group(1) not in live_ids]
        _say(delete_netns(orphans))
        removed += [f"netns {n}" for n in orphans if netns_inode(n) is None]
        labs = [e.name for e in sorted(NETNS_DIR.iterdir())
                if (m := LAB_NETNS_PATTERN.match(e.name))
                and (include_live or not _lab_owner_may_live(int(m.group(1))))]
        _say(delete_netns(labs))
        removed += [f"netns {n}" for n in labs if netns_inode(n) is None]
    return removed


def _state_files(include_live: bool) -> list[Path]:
    """Every run's state file, and the half-saved copies (`<id>.tmp`) a run killed between
    write and rename leaves; such a copy may hold resources the .json does not list yet. A copy
    younger than a few seconds may be a live run's save in progress and is left alone."""
    now = time.time()
    copies = []
    for path in sorted(RUNS_DIR.glob("*.tmp")):
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            continue
        if include_live or age > _HALF_SAVED_GRACE_S:
            copies.append(path)
    return [*copies, *sorted(RUNS_DIR.glob("*.json"))]


def _lab_owner_may_live(pid_mod: int) -> bool:
    """Whether a live process could have created a lab tagged with this pid modulo 100000
    (the tag keeps no more of the pid, so any live match keeps the lab)."""
    return any(entry.name.isdigit() and int(entry.name) % 100000 == pid_mod
               for entry in Path("/proc").iterdir())


def _say(problems: list[str]) -> None:
    for problem in problems:
        print(f"testbed clean: {problem}", file=sys.stderr)
