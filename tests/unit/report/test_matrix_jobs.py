"""`testbed matrix --jobs N` without a network: waiting cells (expected reset or stall) run
together in child processes before the others, which run alone; results keep the matrix's order;
Ctrl-C ends the children."""

from __future__ import annotations

import copy
import io
import json
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from testbed.matrix import MatrixInterrupted, parse_matrix_spec, run_matrix
from testbed.matrix_jobs import waits
from tests.unit.report.test_matrix import FakeRunner

SPEC: dict[str, Any] = {
    "name": "j",
    "pairings": ["kernel-kernel"],
    "base": {"topology": {"name": "two_path"}, "traffic": {"seconds": 1}, "mptcp": {"subflows": 2}},
    "middleboxes": [
        {"name": "none", "chain": [], "expect": {"default": "mptcp"}},
        {"name": "resets", "chain": [], "expect": {"default": "reset"}},
        {"name": "maybe_stalls", "chain": [], "expect": {"default": "mptcp | stalled"}},
        {"name": "falls_back", "chain": [], "expect": {"default": "fallback-syn"}},
    ],
}
WAIT_S = 1.5


class WaitingRunner(FakeRunner):
    """The fake runner, where waiting rows sleep (as a reset cell waits) and every cell notes
    which process ran it."""

    def __call__(self, spec, out_dir: Path, *, progress) -> dict[str, Any]:
        row = spec.name.split("/")[1]
        began = time.time()
        if row in ("resets", "maybe_stalls"):
            time.sleep(WAIT_S)
        (out_dir / "pid").write_text(f"{os.getpid()} {began} {time.time()}")
        return super().__call__(spec, out_dir, progress=progress)


OUTCOMES = {"none": "mptcp", "resets": "reset", "maybe_stalls": "stalled",
            "falls_back": "fallback-syn"}


def test_waiting_cells_are_those_whose_expectation_ends_in_reset_or_stall() -> None:
    matrix = parse_matrix_spec(copy.deepcopy(SPEC), source="j.toml")
    assert [waits(cell) for cell in matrix.cells] == [False, True, True, False]


def test_waiting_cells_run_together_in_children_first_and_the_order_is_kept(tmp_path: Path) -> None:
    matrix = parse_matrix_spec(copy.deepcopy(SPEC), source="j.toml")
    doc = run_matrix(matrix, tmp_path, runner=WaitingRunner(OUTCOMES), stream=io.StringIO(),
                     tty=False, jobs=3)
    assert [(cell["row"], cell["as_expected"]) for cell in doc["cells"]] == [
        ("none", True), ("resets", True), ("maybe_stalls", True), ("falls_back", True)]
    notes = {row: (tmp_path / "cells" / row / "kernel-kernel" / "pid").read_text().split()
             for row in OUTCOMES}
    pids = {row: int(note[0]) for row, note in notes.items()}
    spans = {row: (float(note[1]), float(note[2])) for row, note in notes.items()}
    assert pids["none"] == pids["falls_back"] == os.getpid()
    assert os.getpid() not in (pids["resets"], pids["maybe_stalls"])
    assert pids["resets"] != pids["maybe_stalls"]
    # both waited at the same time, not one after the other, and before any measuring cell
    assert spans["resets"][0] < spans["maybe_stalls"][1] and spans["maybe_stalls"][0] < spans["resets"][1]
    assert max(spans["resets"][1], spans["maybe_stalls"][1]) <= spans["none"][0]
    on_disk = json.loads((tmp_path / "matrix.json").read_text())
    assert not on_disk["partial"] and [c["row"] for c in on_disk["cells"]] == list(OUTCOMES)


def test_ctrl_c_while_cells_wait_ends_the_children_and_keeps_a_partial_matrix(
        tmp_path: Path) -> None:
    matrix = parse_matrix_spec(copy.deepcopy(SPEC), source="j.toml")
    ctrl_c = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    ctrl_c.start()
    try:
        with pytest.raises(MatrixInterrupted) as caught:
            run_matrix(matrix, tmp_path, runner=WaitingRunner(OUTCOMES), stream=io.StringIO(),
                       tty=False, jobs=2)
    finally:
        ctrl_c.cancel()
    assert caught.value.doc["interrupted"] and caught.value.doc["partial"]
    assert multiprocessing.active_children() == []


class _InterruptsWhenCollected:
    """Sends itself SIGINT from __del__: the handler's KeyboardInterrupt is raised inside a
    finalizer, where Python prints and drops it (as a garbage collection can make happen
    anywhere in a large process)."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)


class SwallowingRunner(FakeRunner):
    def __call__(self, spec, out_dir: Path, *, progress) -> dict[str, Any]:
        if spec.name.split("/")[1] == "none":
            victim = _InterruptsWhenCollected()
            del victim
        return super().__call__(spec, out_dir, progress=progress)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped one
def test_a_ctrl_c_python_swallows_in_a_finalizer_still_interrupts_the_matrix(tmp_path: Path) -> None:
    matrix = parse_matrix_spec(copy.deepcopy(SPEC), source="j.toml")
    with pytest.raises(MatrixInterrupted) as caught:
        run_matrix(matrix, tmp_path, runner=SwallowingRunner(OUTCOMES), stream=io.StringIO(), tty=False)
    assert caught.value.doc["interrupted"] and caught.value.doc["partial"]
