"""HyStart++ (RFC 9406): leave the initial slow start when the round trip starts to grow.

Without it a subflow doubles its window until a queue overflows: on two_path, before the driver
limited the stack's own interface queue, that was a burst of several hundred losses in the first
0.3 s and about 0.3 s of a path nearly idle while they were recovered, which a delay-watching
sender (Linux's HyStart, BBR) does not have. HyStart++ watches
the minimum RTT of each round; once it exceeds the previous round's by a threshold, growth slows
to a quarter (Conservative Slow Start, CSS) and, unless the RTT falls back, congestion avoidance
begins CSS_ROUNDS rounds later. A loss or a timeout ends it at once (the controller's usual
response). Only the initial slow start uses it: a slow start after a timeout runs up to the
ssthresh that the timeout set, as before.

A round ends when the cumulative ACK passes `window_end`, the SND.NXT recorded as it began. The
constants are the RFC's (section 4.3); the stack does not pace, so L = 8.
"""

from __future__ import annotations

MIN_RTT_THRESH = 0.004
MAX_RTT_THRESH = 0.016
MIN_RTT_DIVISOR = 8
N_RTT_SAMPLE = 8
CSS_GROWTH_DIVISOR = 4
CSS_ROUNDS = 5
NON_PACED_L = 8
_INFINITY = float("inf")


class HyStartPlusPlus:
    """The slow-start growth of one subflow while HyStart++ runs; `finished` once it has
    handed over to congestion avoidance (the caller then sets ssthresh to the window)."""

    __slots__ = ("css_baseline_min_rtt", "css_rounds", "current_round_min_rtt", "finished",
                 "in_css", "last_round_min_rtt", "mss", "rtt_sample_count", "window_end")

    def __init__(self, mss: int) -> None:
        self.mss = mss
        self.window_end: int | None = None
        self.last_round_min_rtt = _INFINITY
        self.current_round_min_rtt = _INFINITY
        self.rtt_sample_count = 0
        self.in_css = False
        self.css_baseline_min_rtt = _INFINITY
        self.css_rounds = 0
        self.finished = False

    def increase(self, acked_bytes: int, snd_una: int, snd_nxt: int, rtt_sample: float | None) -> float:
        """The window increase for one ACK in slow start (bytes); may set `finished`."""
        window_end = self.window_end
        if window_end is None or snd_una >= window_end:
            if window_end is not None and self.in_css:
                self.css_rounds += 1
                if self.css_rounds >= CSS_ROUNDS:
                    self.finished = True
                    return 0.0
            self.window_end = snd_nxt
            self.last_round_min_rtt = self.current_round_min_rtt
            self.current_round_min_rtt = _INFINITY
            self.rtt_sample_count = 0
        increase = float(min(acked_bytes, NON_PACED_L * self.mss))
        if rtt_sample is not None:
            if rtt_sample < self.current_round_min_rtt:
                self.current_round_min_rtt = rtt_sample
            self.rtt_sample_count += 1
        if self.in_css:
            if (self.rtt_sample_count >= N_RTT_SAMPLE
                    and self.current_round_min_rtt < self.css_baseline_min_rtt):
                # the RTT went back down: the increase was not the queue; slow start again
                self.in_css = False
                self.css_baseline_min_rtt = _INFINITY
                self.css_rounds = 0
                return increase
            return increase / CSS_GROWTH_DIVISOR
        last = self.last_round_min_rtt
        current = self.current_round_min_rtt
        if self.rtt_sample_count >= N_RTT_SAMPLE and current != _INFINITY and last != _INFINITY:
            threshold = max(MIN_RTT_THRESH, min(last / MIN_RTT_DIVISOR, MAX_RTT_THRESH))
            if current >= last + threshold:
                self.in_css = True
                self.css_baseline_min_rtt = current
                self.css_rounds = 0
        return increase
