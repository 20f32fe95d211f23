"""A SIGTERM whose handler runs inside a weakref callback still ends the run
(runner.sigterm_as_interrupt, interrupts.lost_interrupts_kept): Python prints and drops an
exception raised there, and a full suite saw `testbed run` print "Exception ignored ...
KeyboardInterrupt: signal 15" with a traceback and carry its transfer on to the end. A real
signal, sent from inside a real weakref callback."""

from __future__ import annotations

import os
import signal
import sys
import weakref

import pytest

from testbed.interrupts import raise_lost_interrupt
from testbed.runner import sigterm_as_interrupt


class _Collected:
    pass


def _signal_self(_ref: object) -> None:
    """A weakref callback that signals its own process and gives the handler bytecode to run
    on, still inside the callback."""
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(1000):
        pass


def test_a_sigterm_dropped_in_a_weakref_callback_is_raised_by_the_wait_loop(
        capfd: pytest.CaptureFixture[str]) -> None:
    with sigterm_as_interrupt():
        target = _Collected()
        ref = weakref.ref(target, _signal_self)
        del target  # the callback runs now; Python drops the KeyboardInterrupt raised in it
        assert ref() is None
        with pytest.raises(KeyboardInterrupt, match="signal 15"):
            raise_lost_interrupt()
        raise_lost_interrupt()  # raised once, then forgotten
    assert "Traceback" not in capfd.readouterr().err


def test_outside_a_run_python_reports_it_as_before() -> None:
    seen: list[type[BaseException] | None] = []
    previous = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: seen.append(unraisable.exc_type)
    try:
        with sigterm_as_interrupt():
            pass
        assert sys.unraisablehook is not previous  # ours again, not the run's
        target = _Collected()
        weakref.finalize(target, lambda: (_ for _ in ()).throw(KeyboardInterrupt("late")))
        del target
    finally:
        sys.unraisablehook = previous
    assert seen == [KeyboardInterrupt]
    raise_lost_interrupt()  # nothing was kept


def test_one_no_loop_raised_is_raised_when_the_block_ends() -> None:
    with pytest.raises(KeyboardInterrupt, match="signal 15"), sigterm_as_interrupt():
        target = _Collected()
        ref = weakref.ref(target, _signal_self)
        del target
        assert ref() is None  # the block's own work goes on to its end
