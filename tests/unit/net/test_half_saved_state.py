"""`testbed clean` also reads the half-saved state copy (`<id>.tmp`) a run killed between write
and rename leaves: it removes what that copy names and the copy itself, but leaves a fresh copy
(a live run's save in progress) alone."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from testbed.net import state as run_state
from testbed.net.state import process_start_ticks


@pytest.fixture
def runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.setattr(run_state, "RUNS_DIR", runs)
    # the namespace scan must not see (and remove) the real runs of this machine
    netns = tmp_path / "netns"
    netns.mkdir()
    monkeypatch.setattr(run_state, "NETNS_DIR", netns)
    return runs


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _half_saved(runs: Path, run_id: str, work_dir: Path, groups: list, age_s: float) -> Path:
    copy = runs / f"{run_id}.tmp"
    copy.write_text(json.dumps({"run_id": run_id, "runner_pid": _dead_pid(), "started": 0.0,
                                "netns": [], "work_dir": str(work_dir),
                                "process_groups": groups}))
    then = time.time() - age_s
    os.utime(copy, (then, then))
    return copy


def test_an_old_half_saved_copy_is_cleaned_with_what_it_names(runs_dir: Path, tmp_path: Path) -> None:
    leader = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        work = tmp_path / "work-a"
        work.mkdir()
        copy = _half_saved(runs_dir, "aaaaaa", work, [[leader.pid, process_start_ticks(leader.pid)]],
                           age_s=60)
        removed = run_state.clean()
        assert f"process group {leader.pid}" in removed
        assert "run aaaaaa" in removed
        assert leader.wait(timeout=5) == -9
        assert not copy.exists() and not work.exists()
    finally:
        leader.kill()
        leader.wait()


def test_a_fresh_half_saved_copy_is_left_for_its_run(runs_dir: Path, tmp_path: Path) -> None:
    work = tmp_path / "work-b"
    work.mkdir()
    copy = _half_saved(runs_dir, "bbbbbb", work, [], age_s=0)
    assert run_state.clean() == []
    assert copy.exists() and work.exists()
    assert "run bbbbbb" in run_state.clean(include_live=True)
    assert not copy.exists() and not work.exists()


def test_a_torn_copy_is_removed_once_old(runs_dir: Path) -> None:
    copy = runs_dir / "cccccc.tmp"
    copy.write_text('{"run_id": "cccc')
    then = time.time() - 60
    os.utime(copy, (then, then))
    run_state.clean()
    assert not copy.exists()
