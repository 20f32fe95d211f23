"""Interrupts that Python cannot lose.

Python prints and drops an exception raised inside a weakref callback, a __del__ or another
finalizer: a SIGINT whose handler runs there is gone. The signal matrix saw a Ctrl-C lost that
way while the Prague demo wrote its results, and a unit test saw `testbed matrix --jobs` miss one
in the full suite's large process. `latched_interrupts` raises KeyboardInterrupt as usual and
also remembers the signal, so the caller can still act on it when its work is done.
`forks_hold_interrupts` closes the same hole in os.fork's at-fork hooks. `lost_interrupts_kept`
closes it for runs: an interrupt Python would print and drop is kept instead, and the run's
wait loop raises it (`raise_lost_interrupt`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator

# the signals whose Python handlers end a run with KeyboardInterrupt (SIGHUP: the remote agent's)
INTERRUPTING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_lost: list[str] = []  # KeyboardInterrupts Python dropped inside a finalizer, not yet raised


@contextlib.contextmanager
def lost_interrupts_kept() -> Iterator[None]:
    """A KeyboardInterrupt raised where Python drops it (a weakref callback, a __del__) is
    kept for `raise_lost_interrupt` instead of printed as "Exception ignored" with a
    traceback; one still kept when the block ends is raised then. The full suite saw a
    SIGTERM land in a WeakSet callback while a network was built: the run printed the
    traceback and carried on to the end as if never signalled."""
    previous = sys.unraisablehook

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            _lost.append(str(unraisable.exc_value) or "interrupted")
            return
        previous(unraisable)

    sys.unraisablehook = hook  # nested (a matrix's cells): the outer's kept ones stay kept
    try:
        yield
    finally:
        sys.unraisablehook = previous
        kept, _lost[:] = list(_lost), []
    if kept:  # no wait loop raised it: the work is done, and the caller still hears of it
        raise KeyboardInterrupt(kept[0])


def raise_lost_interrupt() -> None:
    """Raise, now, an interrupt that `lost_interrupts_kept` kept (the loops that wait call it)."""
    if _lost:
        message = _lost[0]
        _lost.clear()
        raise KeyboardInterrupt(message)


@contextlib.contextmanager
def latched_interrupts() -> Iterator[list[int]]:
    """SIGINT and SIGTERM raise KeyboardInterrupt and are appended to the yielded list.

    pyroute2 forks helpers that inherit the handler; a fork just exits (as in
    testbed.runner.sigterm_as_interrupt). Outside the main thread, where handlers cannot be
    set, nothing is installed and the list stays empty."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    owner = os.getpid()

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != owner:
            os._exit(128 + signum)
        caught.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with forks_hold_interrupts():
            yield caught
    finally:
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)


@contextlib.contextmanager
def forks_hold_interrupts() -> Iterator[None]:
    """While the block runs, os.fork holds the interrupting signals (_fork_holding_signals)."""
    real_fork = os.fork
    os.fork = _fork_holding_signals(real_fork)
    try:
        yield
    finally:
        os.fork = real_fork


def _fork_holding_signals(real_fork: Callable[[], int]) -> Callable[[], int]:
    """os.fork with the interrupting signals held until it returns, then delivered in the parent.

    os.fork runs Python's at-fork hooks (logging's lock release among them), and an exception
    raised inside a hook is printed as "Exception ignored" and dropped. A signal that arrives
    during the fork system call (milliseconds for a large process) has its handler run in the
    parent's first hook too. pyroute2 forks many times while a network is built: a SIGTERM
    printed a traceback and the run went on as if never signalled, and a remote matrix missed
    its hang-up. Held, the signal interrupts the parent just after the fork instead; the
    child keeps the handlers and exits on its own signals.
    """
    def fork() -> int:
        if threading.current_thread() is not threading.main_thread():
            return real_fork()
        with signals_held(sig for sig in INTERRUPTING_SIGNALS
                          if callable(signal.getsignal(sig))) as arrived:
            pid = real_fork()
        if pid != 0:
            for signum in dict.fromkeys(arrived):
                signal.raise_signal(signum)  # through the handlers just restored
        return pid

    return fork


@contextlib.contextmanager
def signals_held(signals: Iterable[int]) -> Iterator[list[int]]:
    """Replace these signals' handlers with one that only notes the signal, in the yielded
    list, and put them back when the block ends; the caller decides what to deliver then.
    Handlers, not a blocked mask: children started in the block must not inherit it."""
    arrived: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: arrived.append(signum))
                for sig in signals}
    try:
        yield arrived
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
