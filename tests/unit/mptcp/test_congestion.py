"""Window arithmetic of each congestion controller against hand-computed values."""

from __future__ import annotations

import pytest

from testbed.mptcp.cc import CONGESTION_CONTROLLERS, CouplingGroup, create_congestion_control

MSS = 1000


def _make(name: str, group: CouplingGroup, *, window_segments: int, rtt: float,
          ssthresh: float = 1.0):
    cc = create_congestion_control(name, mss=MSS, initial_window_segments=window_segments,
                                   group=group)
    cc.ssthresh = ssthresh  # below the window: congestion avoidance
    cc.on_rtt_measurement(now=0.0, smoothed_rtt=rtt)
    return cc


def test_registry_is_explicit_and_rejects_unknown() -> None:
    assert sorted(CONGESTION_CONTROLLERS) == ["balia", "lia", "olia", "reno"]
    with pytest.raises(ValueError, match="unknown congestion control 'cubic'"):
        create_congestion_control("cubic", mss=MSS, initial_window_segments=10,
                                  group=CouplingGroup())


def test_reno_slow_start_avoidance_loss_and_rto() -> None:
    cc = create_congestion_control("reno", mss=MSS, initial_window_segments=10,
                                   group=CouplingGroup())
    assert cc.cwnd == 10_000
    cc.on_packet_acked(now=0, acked_bytes=5_000)
    assert cc.cwnd == 15_000  # slow start: +acked
    cc.on_packets_lost(now=0, lost_bytes=1_000)
    assert cc.cwnd == 7_500 and cc.ssthresh == 7_500  # halved
    cc.on_packet_acked(now=0, acked_bytes=1_500)
    assert cc.window == pytest.approx(7_500 + 1_500 * 1_000 / 7_500)  # +200 bytes
    cc.on_retransmission_timeout(now=0)
    assert cc.cwnd == MSS and cc.ssthresh == pytest.approx(7_700 / 2)
    cc.on_retransmission_timeout(now=0, repeated=True)  # the resent segment timed out again
    assert cc.cwnd == MSS and cc.ssthresh == pytest.approx(7_700 / 2)  # RFC 5681 3.1: kept


def test_lia_increase_matches_rfc6356() -> None:
    group = CouplingGroup()
    a = _make("lia", group, window_segments=10, rtt=0.1)
    b = _make("lia", group, window_segments=20, rtt=0.2)
    # alpha = total * max(w/rtt^2) / (sum w/rtt)^2 = 30000 * max(1e6, 5e5) / (1e5+1e5)^2
    assert a.alpha() == pytest.approx(30_000 * 1_000_000 / (200_000**2))  # 0.75
    a.on_packet_acked(now=0, acked_bytes=1_000)
    coupled = 0.75 * 1_000 * MSS / 30_000  # 25 bytes
    uncoupled = 1_000 * MSS / 10_000  # 100 bytes
    assert a.window == pytest.approx(10_000 + min(coupled, uncoupled))
    b.on_packet_acked(now=0, acked_bytes=1_000)
    total = 30_000 + 25
    alpha = total * max(10_025 / 0.01, 20_000 / 0.04) / (10_025 / 0.1 + 20_000 / 0.2) ** 2
    assert b.window == pytest.approx(20_000 + min(alpha * 1_000 * MSS / total, 50))


def test_olia_increase_and_alpha_sets() -> None:
    group = CouplingGroup()
    a = _make("olia", group, window_segments=10, rtt=0.1)
    b = _make("olia", group, window_segments=20, rtt=0.1)
    # no losses yet: equal (zero) quality -> both best; b has the largest window, a does not
    assert a.alpha() == pytest.approx(1 / (2 * 1))  # a in B\M
    assert b.alpha() == pytest.approx(-1 / (2 * 1))  # b in M while B\M is not empty
    a.on_packet_acked(now=0, acked_bytes=1_000)
    w_a, rate_sum = 10.0, 10 / 0.1 + 20 / 0.1
    per_packet = (w_a / 0.1**2) / rate_sum**2 + 0.5 / w_a
    assert a.window == pytest.approx(10_000 + per_packet * MSS)
    before = b.window
    b.on_packets_lost(now=0, lost_bytes=1_000)
    assert b.window == pytest.approx(before / 2)


def test_balia_increase_and_decrease() -> None:
    group = CouplingGroup()
    a = _make("balia", group, window_segments=10, rtt=0.1)  # x_a = 100 pkt/s
    b = _make("balia", group, window_segments=10, rtt=0.2)  # x_b = 50 pkt/s
    assert b.alpha() == pytest.approx(2.0)
    b.on_packet_acked(now=0, acked_bytes=1_000)
    per_packet = (50 / 0.2) / 150**2 * (1 + 2) / 2 * (4 + 2) / 5
    assert b.window == pytest.approx(10_000 + per_packet * MSS)
    before = b.window
    b.on_packets_lost(now=0, lost_bytes=1_000)  # alpha_b ~ 2 -> capped at 1.5
    assert b.window == pytest.approx(max(before - before / 2 * 1.5, 2 * MSS))
    a.on_packets_lost(now=0, lost_bytes=1_000)  # a is the fastest: alpha_a = 1 -> halved
    assert a.window == pytest.approx(5_000)


def test_coupled_group_forgets_closed_subflows() -> None:
    group = CouplingGroup()
    a = _make("lia", group, window_segments=10, rtt=0.1)
    b = _make("lia", group, window_segments=10, rtt=0.1)
    b.close()
    assert group.members == [a]
    # alone, LIA is Reno: alpha = w * (w/r^2) / (w/r)^2 = 1
    assert a.alpha() == pytest.approx(1.0)
