"""`testbed remote run` signalled mid-shard (issue 13 point 4; Ctrl-C is in test_remote_run).

SIGTERM stops the remote matrices like Ctrl-C and keeps a partial, interrupted matrix.json;
SIGKILL of the controller drops its SSH connections, and each host's agent, hung up, tears its
run down by itself: on a real lab no local `testbed clean` could reach it, so the hosts are
checked before any clean here. Neither leaves a half-downloaded shard in the output.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.integration.foundation.conftest import leftovers
from tests.integration.remote.lab import Lab
from tests.integration.remote.test_remote_run import (
    CI_SPEC,
    RUN_ID,
    Controller,
    run_ids,
    wait_for_remote_cell,
    wait_until_gone_except_sshd,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _wait_for_traffic(cell_log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while "server listening" not in cell_log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the remote cell never started its transfer"
        time.sleep(0.05)


SUBSET = [("build", signal.SIGTERM), ("traffic", signal.SIGKILL)]
FULL = [(stage, sig) for stage in ("build", "traffic")
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL) if (stage, sig) not in SUBSET]


def _ids(cases: list[tuple[str, signal.Signals]]) -> list[str]:
    return [f"{stage}-{sig.name[3:]}" for stage, sig in cases]


@pytest.mark.parametrize(("stage", "sig"), SUBSET, ids=_ids(SUBSET))
def test_a_signalled_controller_leaves_no_host_anything(lab: Lab, tmp_path: Path, stage: str,
                                                        sig: signal.Signals) -> None:
    _check(lab, tmp_path, stage, sig)


@pytest.mark.skipif(os.environ.get("TESTBED_SIGNAL_MATRIX") != "full",
                    reason="the full signal matrix is a command; TESTBED_SIGNAL_MATRIX=full runs it here")
@pytest.mark.parametrize(("stage", "sig"), FULL, ids=_ids(FULL))
def test_remote_signal_matrix(lab: Lab, tmp_path: Path, stage: str, sig: signal.Signals) -> None:
    _check(lab, tmp_path, stage, sig)


def _check(lab: Lab, tmp_path: Path, stage: str, sig: signal.Signals) -> None:
    out = tmp_path / "out"
    controller = Controller(lab, str(CI_SPEC), "--hosts", "h1,h2", "--out", str(out),
                            "--rows", "none,strip_mp_join,strip_mp_capable_syn")
    cell_log = wait_for_remote_cell(lab, "h1")  # its run id is there: the network is being built
    if stage == "traffic":
        _wait_for_traffic(cell_log)
    controller.proc.send_signal(sig)
    status, stdout, stderr = controller.finish(timeout=90)
    ids = run_ids(lab.remote_dir)
    assert RUN_ID.search(cell_log.read_text()) and ids
    for name in lab.servers:  # each host tore down by itself: only sshd is left there
        assert wait_until_gone_except_sshd(lab, name) == [], f"processes left on {name}"
    assert {i: leftovers(i) for i in ids if leftovers(i)} == {}
    assert not list(out.glob("*/.staging")), "a half-downloaded shard was left"
    if sig in (signal.SIGINT, signal.SIGTERM):
        assert status == 130, stdout + stderr
        assert "Traceback" not in stderr
        doc = json.loads((out / "matrix.json").read_text())
        assert doc["partial"] is True and doc["interrupted"] is True
    else:
        assert status == -signal.SIGKILL
    # the remote matrices that were cut short say so in their own documents
    docs = [json.loads(p.read_text()) for p in lab.remote_dir.glob("runs/*/*/*/matrix.json")]
    assert all(d["interrupted"] or not d["partial"] for d in docs)


# The download of a shard ("while writing results"): the host's wrapper pads the finished shard
# with a large file of zeros (under the 2 GiB per-file limit), so the controller's download lasts
# seconds, and the signal comes when its staging directory appears.
PADDING_WRAPPER = """#!/bin/sh
{python} "$@"
status=$?
out=""
for word in "$@"; do
    case "$word" in --out=*) out="${{word#--out=}}" ;; esac
done
if [ "$2" = "testbed.remote.agent" ] && [ "$3" = "matrix" ] && [ -n "$out" ]; then
    head -c 1500M /dev/zero > "$out/cells/none/kernel-kernel/padding.bin"
fi
exit $status
"""


@pytest.mark.skipif(os.environ.get("TESTBED_SIGNAL_MATRIX") != "full",
                    reason="the full signal matrix is a command; TESTBED_SIGNAL_MATRIX=full runs it here")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["INT", "TERM", "KILL"])
def test_a_controller_signalled_while_downloading_a_shard(lab: Lab, tmp_path: Path,
                                                          sig: signal.Signals) -> None:
    """INT/TERM: the shard being fetched is finished (its cells are whole) or not adopted, the
    staging copy is removed, the run says interrupted (130). KILL: whatever staging copy is left
    is never read as results: matrix.json is not written, and no cell directory is half there."""
    python = tmp_path / "padding-python"
    python.write_text(PADDING_WRAPPER.format(python=sys.executable))
    python.chmod(0o755)
    out = tmp_path / "out"
    controller = Controller(lab, str(CI_SPEC), "--hosts", "h1", "--out", str(out), "--rows", "none",
                            "--remote-python", str(python))
    deadline = time.monotonic() + 120
    while not list(out.glob("*/.staging/*")):
        assert time.monotonic() < deadline and controller.proc.poll() is None, "".join(controller.err)
        time.sleep(0.02)
    controller.proc.send_signal(sig)
    status, stdout, stderr = controller.finish(timeout=120)
    assert wait_until_gone_except_sshd(lab, "h1") == [], "processes left on h1"
    cells = [p for p in out.glob("*/cells/*/*") if p.is_dir()]
    assert all((cell / "result.json").is_file() for cell in cells), cells  # never half a cell
    if sig == signal.SIGKILL:
        assert status == -signal.SIGKILL
        assert not (out / "matrix.json").exists() or json.loads((out / "matrix.json").read_text())["partial"]
        return
    assert status == 130, stdout + stderr
    assert "Traceback" not in stderr
    assert not list(out.glob("*/.staging")), "the staging copy was left"
    doc = json.loads((out / "matrix.json").read_text())
    assert doc["interrupted"] is True
