"""`testbed demo prague` never loses a Ctrl-C: Python drops a KeyboardInterrupt raised inside a
weakref callback (the signal matrix saw prague/results/SIGINT end as a normal run), so the
demo remembers every SIGINT/SIGTERM as well as raising it, and marks prague.json."""

from __future__ import annotations

import json
import os
import signal
import weakref
from pathlib import Path

import pytest

from testbed.demo.prague import DEMO_FILE, mark_interrupted
from testbed.interrupts import latched_interrupts


class _Thing:
    pass


def _interrupt_inside(_ref: object) -> None:
    os.kill(os.getpid(), signal.SIGINT)
    total = 0
    for step in range(10_000):  # the handler runs between these bytecodes, in the callback
        total += step


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the point
def test_an_interrupt_swallowed_in_a_weakref_callback_is_still_seen() -> None:
    with latched_interrupts() as caught:
        thing = _Thing()
        ref = weakref.ref(thing, _interrupt_inside)
        del thing  # the callback runs; its KeyboardInterrupt is printed and dropped
        assert ref() is None
    assert caught == [signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_an_ordinary_interrupt_still_raises_and_is_remembered() -> None:
    raised = False
    with latched_interrupts() as caught:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10_000):
                pass
        except KeyboardInterrupt:
            raised = True
    assert raised and caught == [signal.SIGTERM]


def test_mark_interrupted_keeps_what_the_record_has(tmp_path: Path) -> None:
    mark_interrupted(tmp_path)  # interrupted before the demo wrote anything
    assert json.loads((tmp_path / DEMO_FILE).read_text()) == {
        "schema": 1, "kind": "prague-demo", "interrupted": True, "passed": False}
    (tmp_path / DEMO_FILE).write_text(json.dumps({"schema": 1, "kind": "prague-demo",
                                                  "phases": [1], "passed": True}))
    mark_interrupted(tmp_path)
    record = json.loads((tmp_path / DEMO_FILE).read_text())
    assert record["phases"] == [1] and record["interrupted"] is True and record["passed"] is False
