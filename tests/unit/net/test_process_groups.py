"""`testbed clean` ends a recorded process group (a VM started in its own session) and only
while it is still the one recorded."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from testbed.net.state import kill_process_groups, process_start_ticks


def _group() -> subprocess.Popen:
    """A leader and a child in a session of their own, like vng and its qemu."""
    return subprocess.Popen(["sh", "-c", "sleep 60 & exec sleep 60"], start_new_session=True)


def _members(pgid: int, wait_s: float = 5.0) -> list[int]:
    """Live (not zombie) processes of the group, after they had `wait_s` to die."""
    deadline = time.monotonic() + wait_s
    while True:
        members = []
        for entry in Path("/proc").iterdir():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
        if not members or time.monotonic() > deadline:
            return members
        time.sleep(0.05)


def test_a_recorded_group_is_killed_whole() -> None:
    leader = _group()
    try:
        started = process_start_ticks(leader.pid)
        assert started is not None
        assert kill_process_groups([[leader.pid, started]]) == [f"process group {leader.pid}"]
        assert leader.wait(timeout=5) == -9
        assert _members(leader.pid) == []  # the child went with it
    finally:
        leader.kill()
        leader.wait()


def test_a_pid_that_names_another_process_now_is_left_alone() -> None:
    leader = _group()
    try:
        started = process_start_ticks(leader.pid)
        assert started is not None
        assert kill_process_groups([[leader.pid, started - 1]]) == []  # recorded earlier: reused
        assert leader.poll() is None
        assert kill_process_groups([[1, 0], "junk", [leader.pid]]) == []
        assert leader.poll() is None
    finally:
        subprocess.run(["kill", "-9", "--", f"-{leader.pid}"], check=False)
        leader.wait()
