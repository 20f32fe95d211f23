"""SIGTERM while the network is being built leaves nothing (issue 13, point 5).

A `tb-<run>-client` with only `lo` and no run record was left after a full suite: a signal
cut a node's creation in half, and `ip netns attach` named the namespace after teardown had
looked. Node creation and naming now hold the signal until both are done
(testbed.net.build.signals_deferred); these runs are interrupted at several points of the
build, and each must leave no namespace, record or work directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from testbed.net.build import signals_deferred

from .conftest import RUN_ID, TESTBED, leftovers, write_spec

pytestmark = pytest.mark.root


def test_a_signal_inside_the_block_arrives_after_it() -> None:
    seen: list[str] = []
    previous = signal.signal(signal.SIGTERM, lambda *_: seen.append("handler"))
    try:
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            seen.append("block ended")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == ["block ended", "handler"]


@pytest.mark.parametrize("after_s", [0.0, 0.05, 0.2])
def test_sigterm_during_the_build_leaves_nothing(tmp_path: Path, after_s: float) -> None:
    spec = write_spec(tmp_path, name="interrupted", seconds=5)
    proc = subprocess.Popen([*TESTBED, "run", str(spec), "--out", str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[3])
    assert proc.stdout is not None
    run_id = ""
    for line in proc.stdout:
        if found := RUN_ID.search(line):
            run_id = found.group(1)
            break
    assert run_id, "no run id printed"
    time.sleep(after_s)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err
    deadline = time.monotonic() + 5
    while leftovers(run_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftovers(run_id) == []
