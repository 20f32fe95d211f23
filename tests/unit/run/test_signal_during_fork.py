"""A SIGTERM that lands inside os.fork's at-fork hooks still ends the run
(runner.sigterm_as_interrupt): Python drops an exception raised in a hook, and a full suite
once saw the run print "Exception ignored" with a KeyboardInterrupt and carry on. Real forks
and a real signal; the hook sends it from inside the fork, where logging's lock release runs."""

from __future__ import annotations

import os
import signal

import pytest

from testbed.runner import sigterm_as_interrupt

_ARMED: list[int] = []


def _signal_self_once() -> None:
    """An after-fork hook of the parent: one SIGTERM to itself, handled within the hook."""
    if _ARMED:
        _ARMED.pop()
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # bytecode for the handler to run on, still inside the hook
            pass


os.register_at_fork(after_in_parent=_signal_self_once)  # cannot be removed: disarmed by default


def _fork_and_reap() -> None:
    try:
        pid = os.fork()
    except KeyboardInterrupt:
        os.wait()  # the child was made before the signal was delivered
        raise
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def test_a_sigterm_inside_a_fork_hook_interrupts_the_parent_after_the_fork(
        capfd: pytest.CaptureFixture[str]) -> None:
    with sigterm_as_interrupt():
        _ARMED.append(1)
        with pytest.raises(KeyboardInterrupt, match="signal 15"):
            _fork_and_reap()
    assert "Exception ignored" not in capfd.readouterr().err


def test_without_a_signal_fork_is_untouched_and_restored_after_the_block() -> None:
    real_fork = os.fork
    with sigterm_as_interrupt():
        assert os.fork is not real_fork
        _fork_and_reap()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert os.fork is real_fork
