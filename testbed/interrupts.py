"""Interrupts that Python cannot lose.

Python prints and drops an exception raised inside a weakref callback, a __del__ or another
finalizer: a SIGINT whose handler runs there is gone. The signal matrix saw a Ctrl-C lost that
way while the Prague demo wrote its results, and a unit test saw `testbed matrix --jobs` miss one
in the full suite's large process. `latched_interrupts` raises KeyboardInterrupt as usual and
also remembers the signal, so the caller can still act on it when its work is done.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator


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
        yield caught
    finally:
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)
