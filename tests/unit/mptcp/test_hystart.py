"""HyStart++ (RFC 9406) in the controllers' initial slow start, driven ACK by ACK.

A helper plays round trips as a sender does: one ACK per MSS, each followed by sending up to
the window, every ACK of a round with the same RTT sample. The RFC's rounds end at the ACK that
covers the SND.NXT recorded when they began, so a controller's round starts one ACK before the
helper's; the assertions below allow for that.
"""

from __future__ import annotations

import pytest

from testbed.mptcp.cc import CONGESTION_CONTROLLERS, CouplingGroup, create_congestion_control
from testbed.mptcp.cc.base import CongestionControl
from testbed.mptcp.cc.hystart import CSS_GROWTH_DIVISOR, CSS_ROUNDS, NON_PACED_L
from testbed.mptcp.config import StackConfig

MSS = 1000


class Sender:
    """Sequence numbers of one subflow around a controller."""

    def __init__(self, cc: CongestionControl) -> None:
        self.cc = cc
        self.snd_una = 0
        self.snd_nxt = cc.cwnd  # the initial window is out

    def round(self, rtt: float) -> None:
        """Acknowledge what was in flight, one MSS per ACK with RTT sample `rtt`, sending up
        to the window after each ACK."""
        target = self.snd_nxt
        while self.snd_una < target:
            self.snd_una += MSS
            self.cc.on_packet_acked(now=0.0, acked_bytes=MSS, snd_una=self.snd_una,
                                    snd_nxt=self.snd_nxt, rtt_sample=rtt)
            self.snd_nxt = max(self.snd_nxt, self.snd_una + self.cc.cwnd)


def _sender(name: str = "reno", *, hystart: bool = True, segments: int = 10) -> Sender:
    return Sender(create_congestion_control(name, mss=MSS, initial_window_segments=segments,
                                            group=CouplingGroup(), hystart=hystart))


@pytest.mark.parametrize("name", sorted(CONGESTION_CONTROLLERS))
def test_a_steady_rtt_keeps_slow_start_doubling(name: str) -> None:
    sender = _sender(name)
    for _ in range(6):
        before = sender.cc.cwnd
        sender.round(0.010)
        assert sender.cc.cwnd == 2 * before
    assert sender.cc.ssthresh == float("inf") and sender.cc.hystart is not None


@pytest.mark.parametrize("name", sorted(CONGESTION_CONTROLLERS))
def test_a_growing_rtt_enters_css_then_congestion_avoidance(name: str) -> None:
    sender = _sender(name)
    sender.round(0.010)
    sender.round(0.010)
    hystart = sender.cc.hystart
    assert hystart is not None and not hystart.in_css
    # 10 ms + max(4 ms, 10/8 ms): a round whose every sample is 15 ms is past the threshold
    sender.round(0.015)
    sender.round(0.015)
    assert hystart.in_css and hystart.css_baseline_min_rtt == pytest.approx(0.015)
    rounds = 0
    while sender.cc.hystart is not None:
        before = sender.cc.window
        sender.round(0.015)
        rounds += 1
        if sender.cc.hystart is not None:  # a whole round of CSS: a quarter of slow start's growth
            assert sender.cc.window / before == pytest.approx(1 + 1 / CSS_GROWTH_DIVISOR, abs=0.02)
        assert rounds <= CSS_ROUNDS
    assert rounds >= CSS_ROUNDS - 1  # the rounds of CSS counted with the one it began in
    # ssthresh is the window as CSS ended; the round's later ACKs grew it by congestion avoidance
    assert sender.cc.ssthresh <= sender.cc.window < sender.cc.ssthresh + MSS
    window = sender.cc.window
    sender.round(0.015)
    assert sender.cc.window < window + 2 * MSS  # about one MSS per round now


def test_an_rtt_below_the_threshold_does_not_leave_slow_start() -> None:
    sender = _sender()
    sender.round(0.010)
    for _ in range(3):
        sender.round(0.0139)  # 3.9 ms more: below MIN_RTT_THRESH (4 ms)
    assert sender.cc.hystart is not None and not sender.cc.hystart.in_css


def test_the_threshold_grows_with_the_rtt_up_to_16_ms() -> None:
    sender = _sender()
    sender.round(0.200)
    for _ in range(2):
        sender.round(0.2159)  # 15.9 ms more: below min(200/8, 16) ms
    assert sender.cc.hystart is not None and not sender.cc.hystart.in_css
    for _ in range(2):
        sender.round(0.2159 + 0.0161)  # 16.1 ms more than the rounds before
    assert sender.cc.hystart is not None and sender.cc.hystart.in_css


def test_an_rtt_falling_back_in_css_resumes_slow_start() -> None:
    sender = _sender()
    sender.round(0.010)
    sender.round(0.010)
    sender.round(0.015)
    sender.round(0.015)
    hystart = sender.cc.hystart
    assert hystart is not None and hystart.in_css
    sender.round(0.012)  # below the CSS baseline (15 ms): jitter, not a queue
    assert not hystart.in_css and sender.cc.hystart is hystart
    before = sender.cc.cwnd
    sender.round(0.012)
    assert sender.cc.cwnd == pytest.approx(2 * before, abs=MSS)  # slow start again


@pytest.mark.parametrize("event", ["loss", "timeout"])
def test_a_loss_or_a_timeout_ends_hystart(event: str) -> None:
    sender = _sender()
    sender.round(0.010)
    if event == "loss":
        sender.cc.on_packets_lost(now=0.0, lost_bytes=MSS)
    else:
        sender.cc.on_retransmission_timeout(now=0.0)
    assert sender.cc.hystart is None
    # the slow start that follows a timeout is the plain one, up to the ssthresh it set
    sender.round(0.050)
    assert sender.cc.hystart is None


def test_one_ack_grows_the_window_by_at_most_l_segments() -> None:
    cc = _sender().cc
    cc.on_packet_acked(now=0.0, acked_bytes=20 * MSS, snd_una=20 * MSS, snd_nxt=20 * MSS,
                       rtt_sample=0.010)
    assert cc.window == (10 + NON_PACED_L) * MSS
    plain = _sender(hystart=False).cc
    plain.on_packet_acked(now=0.0, acked_bytes=20 * MSS, snd_una=20 * MSS, snd_nxt=20 * MSS)
    assert plain.window == 30 * MSS


def test_without_hystart_a_growing_rtt_changes_nothing() -> None:
    sender = _sender(hystart=False)
    for rtt in (0.010, 0.020, 0.040, 0.080):
        before = sender.cc.cwnd
        sender.round(rtt)
        assert sender.cc.cwnd == 2 * before


def test_the_stack_turns_it_on_by_default_and_a_spec_can_turn_it_off() -> None:
    assert StackConfig().hystart is True
    assert StackConfig.from_dict({"hystart": False}).hystart is False
