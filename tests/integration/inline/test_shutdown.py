"""SIGTERM, SIGINT and the stop request: exit 0, no socket file left, final stats written."""

from __future__ import annotations

import json
import signal

import pytest

from testbed.inline.control import InlineGoneError
from testbed.inline.lab import LineLab

from .conftest import ping

pytestmark = pytest.mark.root


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "stop"])
def test_clean_exit(lab: LineLab, start_bump, how: str) -> None:
    bump = start_bump({"delay": {"both": {"delay_ms": 1}}})
    ping(lab, count=3, interval_s=0.05)
    if how == "stop":
        bump.control.stop()
    else:
        bump.process.send_signal(getattr(signal, how))
    assert bump.process.wait(timeout=10) == 0, bump.log()
    assert not bump.control_path.exists()
    stats = json.loads(bump.stats_path.read_text())
    assert stats["stop_reason"] == ("stop request" if how == "stop" else how)
    assert stats["upstream"]["frames_out"] >= 3
    with pytest.raises(InlineGoneError):
        bump.control.stats()
