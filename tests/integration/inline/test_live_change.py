"""set_delay while pinging: RTT follows within a second, nothing is lost on the way."""

from __future__ import annotations

import statistics
import subprocess
import threading
import time

import pytest

from testbed.inline.lab import C_ADDR, LineLab

from .conftest import parse_ping, warm_up_arp

pytestmark = pytest.mark.root


def test_rtt_follows_live_changes_without_loss(lab: LineLab, start_bump) -> None:
    bump = start_bump({"delay": {"both": {"delay_ms": 10}}})
    warm_up_arp(lab)
    pinger = lab.spawn(lab.a, ["ping", "-n", "-D", "-c", "450", "-i", "0.01", "-W", "2", C_ADDR],
                       stdout=subprocess.PIPE, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.append(pinger.stdout.read()))  # type: ignore[union-attr]
    reader.start()
    time.sleep(1.0)
    to_30 = time.time()
    bump.control.set_delay(30.0)
    time.sleep(1.5)
    back_to_10 = time.time()
    bump.control.set_delay(10.0)
    pinger.wait(timeout=30)
    reader.join(timeout=5)
    result = parse_ping(output[0])
    # -D stamps the reply's arrival; the request left one RTT earlier.
    sent = [(stamp - rtt / 1000.0, rtt) for stamp, _, rtt in result.replies]
    before = [rtt for t, rtt in sent if t < to_30 - 0.05]
    during = [rtt for t, rtt in sent if to_30 + 1.0 < t < back_to_10 - 0.05]
    after = [rtt for t, rtt in sent if t > back_to_10 + 1.0]
    first_slow = next(t for t, rtt in sent if rtt > 50.0)
    last_slow = max(t for t, rtt in sent if rtt > 50.0)
    print(f"\nlive change: before {statistics.median(before):.2f} ms, at 30 ms each way "
          f"{statistics.median(during):.2f} ms, after {statistics.median(after):.2f} ms; first "
          f"60 ms RTT {1000 * (first_slow - to_30):.1f} ms after set_delay(30); last one "
          f"{1000 * (last_slow - back_to_10):.1f} ms after set_delay(10)")
    assert (result.transmitted, result.received) == (450, 450)
    # Lower bounds are hard (a frame never leaves early); upper ones are medians because a
    # busy machine adds scheduling outliers.
    assert min(before) >= 20.0 and statistics.median(before) < 22
    assert min(during) >= 60.0 and statistics.median(during) < 62
    assert min(after) >= 20.0 and statistics.median(after) < 22
    assert first_slow - to_30 < 1.0 and last_slow - back_to_10 < 1.0
    stats = bump.control.stats()
    for direction in ("upstream", "downstream"):
        assert stats[direction]["delay"]["dropped_queue_full"] == 0
        assert stats[direction]["send_errors"] == 0
