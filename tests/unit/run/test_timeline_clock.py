"""When a run's timeline starts (runner._wait_for_client): at the client's start for a client
on the host, at its connection (its samples file appears) for a VM client, whose program starts
seconds after `go` in a slow guest. A real client process; the network is a recorder."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from testbed.runner import _wait_for_client
from testbed.spec import parse_spec

DELAY_S = 0.8  # the stand-in client "connects" (writes its samples file) this long after start


class SwitchRecorder:
    """The one Network call a middlebox timeline entry makes, with when it came."""

    def __init__(self) -> None:
        self.switched: list[tuple[str, int, bool, float]] = []

    def set_middlebox_active(self, node: str, index: int, active: bool) -> dict[str, int]:
        self.switched.append((node, index, active, time.monotonic()))
        return {"seen": 0}


def _spec(at_s: float) -> Any:
    return parse_spec({
        "topology": {"name": "two_path"}, "traffic": {"bytes": 1000, "timeout_s": 30},
        "middleboxes": [{"node": "mb_a", "type": "strip_options", "params": {"what": ["mptcp"]}}],
        "timeline": [{"at_s": at_s, "middlebox": "mb_a.0", "active": True}],
        "endpoints": [{"role": "server", "stack": "kernel"}, {"role": "client", "stack": "kernel"}]})


def _client(samples: Path, lifetime_s: float) -> subprocess.Popen:
    program = (f"import time, pathlib; time.sleep({DELAY_S}); pathlib.Path({str(samples)!r}).touch(); "
               f"time.sleep({lifetime_s - DELAY_S})")
    return subprocess.Popen([sys.executable, "-c", program])


def _run(tmp_path: Path, *, vm: bool, at_s: float, lifetime_s: float) -> tuple[list, list, float]:
    samples = tmp_path / "client.samples.csv"
    net = SwitchRecorder()
    log: list[dict[str, Any]] = []
    started = time.monotonic()
    proc = _client(samples, lifetime_s)
    try:
        _wait_for_client(_spec(at_s), net, proc, started, tmp_path, log, lambda _m: None, None, None,
                         timeline_zero_file=samples if vm else None)
    finally:
        proc.kill()
        proc.wait()
    return net.switched, log, started


def test_a_host_client_timeline_counts_from_the_client_start(tmp_path: Path) -> None:
    switched, log, started = _run(tmp_path, vm=False, at_s=0.3, lifetime_s=1.5)
    assert len(switched) == 1
    assert switched[0][3] - started < DELAY_S  # before the stand-in "connected"
    assert log[0]["planned_at_s"] == 0.3 and log[0]["middlebox"] == "mb_a.0"


def test_a_vm_client_timeline_counts_from_its_connection(tmp_path: Path) -> None:
    switched, log, started = _run(tmp_path, vm=True, at_s=0.3, lifetime_s=2.0)
    assert len(switched) == 1
    assert switched[0][3] - started >= DELAY_S + 0.3
    assert 0.3 <= log[0]["at_s"] < 1.0  # on the connection's clock, not go's


def test_a_vm_client_that_never_connects_leaves_its_events_marked_not_applied(tmp_path: Path) -> None:
    samples = tmp_path / "client.samples.csv"
    net = SwitchRecorder()
    log: list[dict[str, Any]] = []
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    try:
        _wait_for_client(_spec(0.1), net, proc, time.monotonic(), tmp_path, log, lambda _m: None, None,
                         None, timeline_zero_file=samples)
    finally:
        proc.wait()
    assert net.switched == []
    assert log == [{"at_s": None, "planned_at_s": 0.1, "middlebox": "mb_a.0", "applied": False,
                    "why": "the VM client never connected (no samples file)"}]
