"""The suite leaves nothing behind (issue 13, point 5).

Every test is watched: a network namespace (/run/netns) or a root-namespace network interface
(a veth, a tap) that appears while it runs is remembered with the test's id. At the end of the
session, what is still there of those, any nft table added to the root namespace since the
session started, and any process still carrying this session's marker in its environment
(set here, inherited by every process the suite starts: endpoints, inline processes, iperf3,
VMs) fails the suite, naming the test that created each thing. Things that existed before the
session are never counted, nor namespaces another suite on the machine owns (a live run whose
runner is not ours, processes none of which is ours). TESTBED_LEAK_CHECK=0 turns the check
off.
"""

from __future__ import annotations

import json
import multiprocessing.resource_tracker
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest

MARKER = "TESTBED_TEST_SESSION"
NETNS_DIR = Path("/run/netns")
RUNS_DIR = Path(os.environ.get("TESTBED_STATE_DIR", "/run/testbed")) / "runs"
NET_DIR = Path("/sys/class/net")
GRACE_S = 10.0  # processes and namespaces torn down in the background get this long

_created: dict[str, str] = {}  # "netns X" / "interface Y" -> the test that created it
_nft_before: set[str] = set()
_enabled = os.environ.get("TESTBED_LEAK_CHECK", "1") != "0"


def _names(directory: Path) -> set[str]:
    try:
        return set(os.listdir(directory))
    except OSError:
        return set()


def _nft_tables() -> set[str]:
    try:
        done = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return {line.strip() for line in done.stdout.splitlines() if line.strip()}


def _marked_processes(marker: str) -> list[str]:
    """pid and command line of each process (not this one) whose environment has the marker."""
    needle = f"{MARKER}={marker}".encode()
    found = []
    # multiprocessing's resource tracker, started for this pytest process by an in-process
    # `matrix --jobs`, lives exactly as long as this process: not a leak
    tracker = getattr(multiprocessing.resource_tracker._resource_tracker, "_pid", None)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in (os.getpid(), tracker):
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # exited, not yet reaped
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found.append(f"{entry.name} {command.strip()[:120]}")
    return found


def _has_marker(pid: int, marker: str) -> bool | None:
    """Whether process `pid` carries this session's marker (None: it is gone)."""
    try:
        return f"{MARKER}={marker}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None


def _foreign(netns: str, marker: str) -> bool:
    """A namespace another suite or run on this machine owns: a live testbed run whose runner
    is not ours, or processes inside of which none is ours. (An empty namespace without a
    run record cannot be told apart: it counts, it is the leak issue 13 describes.)"""
    if (found := re.match(r"^tb-([0-9a-f]{6})-", netns)) is not None:
        try:
            record = json.loads((RUNS_DIR / f"{found.group(1)}.json").read_text())
        except (OSError, ValueError):
            record = None
        # a run this pytest process started itself (in-process runs, the kernel interop
        # namespaces) is ours: its environment in /proc predates the marker set here
        runner = record.get("runner_pid") if isinstance(record, dict) else None
        if isinstance(runner, int) and runner != os.getpid() \
                and _has_marker(runner, marker) is False:
            return True
    try:
        inode = os.stat(NETNS_DIR / netns).st_ino
    except OSError:
        return False
    inside = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.stat(entry / "ns" / "net").st_ino == inode:
                    inside.append(int(entry.name))
            except OSError:
                continue
    return bool(inside) and not any(_has_marker(pid, marker) for pid in inside)


def pytest_sessionstart(session: pytest.Session) -> None:
    os.environ.setdefault(MARKER, uuid.uuid4().hex)
    if _enabled:
        _nft_before.update(_nft_tables())


@pytest.fixture(autouse=True)
def _watch_for_leaks(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Remember what each test creates (two directory listings per test)."""
    if not _enabled:
        yield
        return
    namespaces, interfaces = _names(NETNS_DIR), _names(NET_DIR)
    yield
    for name in _names(NETNS_DIR) - namespaces:
        _created.setdefault(f"netns {name}", request.node.nodeid)
    for name in _names(NET_DIR) - interfaces:
        _created.setdefault(f"interface {name}", request.node.nodeid)


def leftovers(marker: str) -> list[str]:
    """What the session created and is still there, one line each."""
    present_netns, present_net = _names(NETNS_DIR), _names(NET_DIR)
    left = []
    for thing, test in sorted(_created.items()):
        kind, name = thing.split(" ", 1)
        if kind == "netns" and name in present_netns and _foreign(name, marker):
            continue
        if name in (present_netns if kind == "netns" else present_net):
            left.append(f"{thing} (created during {test})")
    left += [f"nft table {t} (added during the session)" for t in
             sorted(_nft_tables() - _nft_before)]
    left += [f"process {p}" for p in _marked_processes(marker)]
    return left


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _enabled or session.config.option.collectonly:
        return
    marker = os.environ[MARKER]
    deadline = time.monotonic() + GRACE_S
    left = leftovers(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = leftovers(marker)
    if not left:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = ["the suite left these behind (`testbed clean` removes testbed ones):", *left]
    if reporter is not None:
        reporter.write_sep("=", "leak check failed", red=True)
        for line in lines:
            reporter.write_line(line)
    else:
        print("\n".join(lines))
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
