"""`testbed clean` also removes the namespace line of a killed inline benchmark (`testbed bench`
builds it through testbed.inline.lab), and leaves a lab whose creator may still run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from testbed.net.state import clean

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces)")


def _free_pid_mod() -> int:
    taken = {int(e.name) % 100000 for e in Path("/proc").iterdir() if e.name.isdigit()}
    return next(p for p in range(99999, 0, -1) if p not in taken)


def _namespaces() -> set[str]:
    return set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                              check=True).stdout.split())


def test_clean_removes_a_dead_creators_lab_and_keeps_a_live_ones() -> None:
    dead = f"tbtest-{_free_pid_mod()}beef-a"
    live = f"tbtest-{os.getpid() % 100000}beef-b"
    for name in (dead, live):
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        removed = clean()
        assert f"netns {dead}" in removed and dead not in _namespaces()
        assert live in _namespaces()
    finally:
        for name in (dead, live):
            subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)
