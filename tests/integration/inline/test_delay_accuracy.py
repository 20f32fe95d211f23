"""Delay accuracy through the real bump: RTT with 10 ms each way, idle and under a 100 Mbit/s
TCP flow. The bounds are loose (CI machines are noisy); the figures are printed (-s)."""

from __future__ import annotations

import subprocess
import time

import pytest

from testbed.inline.lab import C_ADDR, LineLab

from .conftest import ping, warm_up_arp

pytestmark = pytest.mark.root

TEN_MS_EACH_WAY = {"seed": 1, "delay": {"both": {"delay_ms": 10}}}


def test_idle_rtt_is_twice_the_one_way_delay(lab: LineLab, start_bump) -> None:
    bump = start_bump(TEN_MS_EACH_WAY)
    warm_up_arp(lab)
    result = ping(lab, count=200, interval_s=0.01)
    stats = bump.control.stats()
    print(f"\nidle RTT, 10 ms each way: median {result.median:.3f} ms, p95 {result.p95:.3f} ms, "
          f"min {min(result.rtts_ms):.3f}, max {max(result.rtts_ms):.3f}; timer late max "
          f"{stats['upstream']['delay']['late_max_ms']:.3f} ms")
    assert result.received == 200
    assert abs(result.median - 20.0) < 2.0
    assert min(result.rtts_ms) >= 20.0  # never earlier than configured


def test_rtt_while_a_100_mbit_flow_runs(lab: LineLab, start_bump) -> None:
    bump = start_bump(TEN_MS_EACH_WAY)
    warm_up_arp(lab)
    lab.spawn(lab.c, ["iperf3", "-s", "-1", "-B", C_ADDR], stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    flow = lab.spawn(lab.a, ["iperf3", "-c", C_ADDR, "-b", "100M", "-t", "5", "-J"],
                     stdout=subprocess.PIPE)
    time.sleep(1.0)  # past slow start
    result = ping(lab, count=200, interval_s=0.01)
    report, _ = flow.communicate(timeout=30)
    assert flow.returncode == 0
    import json

    mbit = json.loads(report)["end"]["sum_received"]["bits_per_second"] / 1e6
    stats = bump.control.stats()
    print(f"\nloaded RTT ({mbit:.1f} Mbit/s TCP alongside), 10 ms each way: median "
          f"{result.median:.3f} ms, p95 {result.p95:.3f} ms, max {max(result.rtts_ms):.3f}; "
          f"max queue {stats['upstream']['delay']['max_depth']} frames, timer late max "
          f"{stats['upstream']['delay']['late_max_ms']:.3f} ms")
    assert mbit > 80
    assert result.received == 200
    assert abs(result.median - 20.0) < 3.0
