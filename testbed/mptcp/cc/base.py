"""The congestion-control interface (aioquic quic/congestion style) and the coupling group.

Every controller keeps its window in bytes as a float (coupled increases are fractional) and
exposes `cwnd` as whole bytes. Hooks are keyword-only so call sites read unambiguously.
Coupled controllers (LIA, OLIA, BALIA) belong to one `CouplingGroup` per MPTCP connection and
read their siblings' windows and RTTs through it; an uncoupled controller ignores the group.
"""

from __future__ import annotations

from testbed.mptcp.cc.hystart import HyStartPlusPlus


class CouplingGroup:
    """The controllers of one connection's subflows."""

    __slots__ = ("members",)

    def __init__(self) -> None:
        self.members: list[CongestionControl] = []

    def join(self, member: CongestionControl) -> None:
        self.members.append(member)

    def leave(self, member: CongestionControl) -> None:
        if member in self.members:
            self.members.remove(member)

    def with_rtt(self) -> list[CongestionControl]:
        return [m for m in self.members if m.smoothed_rtt]


class CongestionControl:
    """NewReno-shaped base: slow start, byte-counted congestion avoidance, halving on loss.

    Subclasses override `congestion_avoidance_increase` (and `reduce_on_loss` when the
    decrease is coupled too).
    """

    name = "base"

    def __init__(self, *, mss: int, initial_window_segments: int, group: CouplingGroup,
                 hystart: bool = False) -> None:
        self.mss = mss
        self.window = float(mss * initial_window_segments)
        self.ssthresh = float("inf")
        # the initial slow start's exit on a growing RTT (RFC 9406); None once it has ended
        self.hystart = HyStartPlusPlus(mss) if hystart else None
        self.smoothed_rtt: float | None = None
        self.group = group
        group.join(self)

    @property
    def cwnd(self) -> int:
        return int(self.window)

    def on_rtt_measurement(self, *, now: float, smoothed_rtt: float) -> None:
        self.smoothed_rtt = smoothed_rtt

    def on_packet_acked(self, *, now: float, acked_bytes: int, snd_una: int | None = None,
                        snd_nxt: int | None = None, rtt_sample: float | None = None) -> None:
        """Grow the window for newly (cumulatively or selectively) acknowledged bytes.

        `snd_una` and `snd_nxt` (after this ACK) and the ACK's RTT sample, when it gave one,
        let HyStart++ count rounds and watch their RTT; without them slow start is plain.
        """
        if self.window < self.ssthresh:
            hystart = self.hystart
            if hystart is not None and snd_una is not None and snd_nxt is not None:
                self.window += hystart.increase(acked_bytes, snd_una, snd_nxt, rtt_sample)
                if hystart.finished:  # CSS_ROUNDS rounds of CSS: congestion avoidance
                    self.ssthresh = self.window
                    self.hystart = None
                return
            # slow start: one byte per byte acknowledged, stopping at ssthresh
            self.window = min(self.window + acked_bytes, self.ssthresh)
            return
        self.window += self.congestion_avoidance_increase(acked_bytes)

    def congestion_avoidance_increase(self, acked_bytes: int) -> float:
        """Reno: one MSS per window of acknowledged bytes."""
        return acked_bytes * self.mss / self.window

    def on_packets_lost(self, *, now: float, lost_bytes: int) -> None:
        """Called once per loss episode (entering fast recovery)."""
        self.hystart = None
        self.window = self.reduce_on_loss()
        self.ssthresh = self.window

    def reduce_on_loss(self) -> float:
        return max(self.window / 2, 2.0 * self.mss)

    def on_retransmission_timeout(self, *, now: float, repeated: bool = False) -> None:
        """One segment, then slow start up to ssthresh. A timeout of a segment the timer
        already resent keeps ssthresh (RFC 5681 3.1): halving the one-segment window again
        would leave 2 segments after an outage of a few RTOs, and congestion avoidance from
        there."""
        self.hystart = None
        if not repeated:
            self.ssthresh = max(self.window / 2, 2.0 * self.mss)
        self.window = float(self.mss)

    def close(self) -> None:
        self.group.leave(self)
