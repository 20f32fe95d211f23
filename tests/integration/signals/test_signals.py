"""Signals at every stage (issue 13 point 4): a representative subset, seconds each.

`python -m tests.integration.signals.commands` runs the whole matrix (every command x stage x
signal) and prints the table; with TESTBED_SIGNAL_MATRIX=full, pytest runs it too (about 40
combinations: too long for the suite's budget, which runs the subset).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.signals.commands import TARGETS, attempt

pytestmark = pytest.mark.root

if os.geteuid() != 0:
    pytest.skip("signal tests need root (namespaces, tc, nft)", allow_module_level=True)

# each: one that went wrong before its fix, or the stage most likely to leave something
SUBSET = [
    ("run", "teardown", "INT"),  # an interrupted teardown left every namespace
    ("run", "build", "TERM"),
    ("run", "traffic", "KILL"),
    ("matrix", "traffic", "INT"),  # the partial cell is rerun by --resume
    ("prague", "traffic", "TERM"),
    ("vm", "command", "KILL"),  # the VM outlived its runner, unknown to testbed clean
]


def _stage(target: str, name: str):  # type: ignore[no-untyped-def]
    return next(stage for stage in TARGETS[target].stages if stage.name == name)


def _check(target: str, stage: str, sig: str, tmp_path: Path) -> None:
    delivery, problems = attempt(TARGETS[target], _stage(target, stage), sig, tmp_path,
                                 second_run=target in ("run", "vm"))
    assert delivery.reached, f"{target} never reached {stage}: {delivery.output[-500:]}"
    assert problems == [], delivery.row()
    if sig == "KILL" and stage in ("traffic", "command"):
        # the kill left something behind: the check above saw `testbed clean` remove it
        assert delivery.before_clean, "a SIGKILL mid-run should leave something for clean"


@pytest.mark.parametrize(("target", "stage", "sig"), SUBSET, ids=["-".join(c) for c in SUBSET])
def test_signal_leaves_nothing_after_clean(target: str, stage: str, sig: str, tmp_path: Path) -> None:
    _check(target, stage, sig, tmp_path)


FULL = [(t, s.name, sig) for t, target in TARGETS.items() for s in target.stages
        for sig in ("INT", "TERM", "KILL") if (t, s.name, sig) not in SUBSET]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("TESTBED_SIGNAL_MATRIX") != "full",
                    reason="the full signal matrix is a command; TESTBED_SIGNAL_MATRIX=full runs it here")
@pytest.mark.parametrize(("target", "stage", "sig"), FULL, ids=["-".join(c) for c in FULL])
def test_signal_matrix(target: str, stage: str, sig: str, tmp_path: Path) -> None:
    _check(target, stage, sig, tmp_path)
