"""A SIGTERM (or the remote agent's SIGHUP) that lands inside os.fork's at-fork hooks still
ends the run (runner.sigterm_as_interrupt, interrupts.forks_hold_interrupts): Python drops an
exception raised in a hook, and full suites saw a run print "Exception ignored" with a
KeyboardInterrupt and carry on, and a remote matrix miss its hang-up. Real forks and a real
signal; the hook sends it from inside the fork, where logging's lock release runs."""

from __future__ import annotations

import os
import signal

import pytest

from testbed.runner import sigterm_as_interrupt

_ARMED: list[int] = []  # the signal the next fork's hook sends


def _signal_self_once() -> None:
    """An after-fork hook of the parent: one signal to itself, handled within the hook."""
    if _ARMED:
        os.kill(os.getpid(), _ARMED.pop())
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


def _hangup(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt("hang-up")  # as the remote agent's handler does


@pytest.mark.parametrize(("signum", "message"), [(signal.SIGTERM, "signal 15"),
                                                 (signal.SIGHUP, "hang-up")])
def test_a_signal_inside_a_fork_hook_interrupts_the_parent_after_the_fork(
        capfd: pytest.CaptureFixture[str], signum: int, message: str) -> None:
    previous = signal.signal(signal.SIGHUP, _hangup)
    try:
        with sigterm_as_interrupt():
            _ARMED.append(signum)
            with pytest.raises(KeyboardInterrupt, match=message):
                _fork_and_reap()
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert "Exception ignored" not in capfd.readouterr().err


def test_without_a_signal_fork_is_untouched_and_restored_after_the_block() -> None:
    real_fork = os.fork
    on_sigint = signal.getsignal(signal.SIGINT)
    with sigterm_as_interrupt():
        assert os.fork is not real_fork
        on_sigterm = signal.getsignal(signal.SIGTERM)
        _fork_and_reap()
        assert signal.getsignal(signal.SIGINT) is on_sigint
        assert signal.getsignal(signal.SIGTERM) is on_sigterm
    assert os.fork is real_fork
