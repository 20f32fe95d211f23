"""Coupled multipath controllers: LIA (RFC 6356), OLIA (Khalili et al.), BALIA (Peng et al.).

All three keep Reno's slow start and differ in congestion avoidance (and BALIA also in its
decrease). Windows are bytes; the papers' per-packet formulas are applied per acknowledged
MSS, i.e. scaled by acked_bytes / mss, and the result converted back to bytes.
"""

from __future__ import annotations

from testbed.mptcp.cc.base import CongestionControl, CouplingGroup


class LiaCongestionControl(CongestionControl):
    """RFC 6356: increase by min(alpha * acked * MSS / cwnd_total, acked * MSS / cwnd_i)."""

    name = "lia"

    def alpha(self) -> float:
        members = self.group.with_rtt() or [self]
        total = sum(m.window for m in members)
        best = max(m.window / ((m.smoothed_rtt or 1.0) ** 2) for m in members)
        denominator = sum(m.window / (m.smoothed_rtt or 1.0) for m in members) ** 2
        return total * best / denominator

    def congestion_avoidance_increase(self, acked_bytes: int) -> float:
        total = sum(m.window for m in self.group.members)
        coupled = self.alpha() * acked_bytes * self.mss / total
        uncoupled = acked_bytes * self.mss / self.window
        return min(coupled, uncoupled)


class OliaCongestionControl(CongestionControl):
    """OLIA: w_r += (w_r/rtt_r^2) / (sum_p w_p/rtt_p)^2 + alpha_r / w_r per ACKed packet.

    l_r is the number of bytes acknowledged between the last two losses (or since the last
    one, whichever is larger). Best paths maximise l_r / rtt_r^2 (the throughput-squared
    proxy used by the UCLouvain and Linux out-of-tree implementations); M holds the paths
    with the largest window.
    """

    name = "olia"

    def __init__(self, *, mss: int, initial_window_segments: int, group: CouplingGroup,
                 hystart: bool = False) -> None:
        super().__init__(mss=mss, initial_window_segments=initial_window_segments, group=group,
                         hystart=hystart)
        self.bytes_between_losses = 0  # l1: between the last two losses
        self.bytes_since_loss = 0  # l2: since the last loss

    @property
    def loss_interval(self) -> int:
        return max(self.bytes_between_losses, self.bytes_since_loss)

    def on_packet_acked(self, *, now: float, acked_bytes: int, snd_una: int | None = None,
                        snd_nxt: int | None = None, rtt_sample: float | None = None) -> None:
        self.bytes_since_loss += acked_bytes
        super().on_packet_acked(now=now, acked_bytes=acked_bytes, snd_una=snd_una,
                                snd_nxt=snd_nxt, rtt_sample=rtt_sample)

    def on_packets_lost(self, *, now: float, lost_bytes: int) -> None:
        self.bytes_between_losses = self.bytes_since_loss
        self.bytes_since_loss = 0
        super().on_packets_lost(now=now, lost_bytes=lost_bytes)

    def alpha(self) -> float:
        members = self.group.with_rtt()
        if self not in members:
            return 0.0
        count = len(members)
        max_window = max(m.window for m in members)
        largest = [m for m in members if m.window == max_window]
        quality = {id(m): _loss_interval(m) / (m.smoothed_rtt or 1.0) ** 2 for m in members}
        best_quality = max(quality.values())
        best = [m for m in members if quality[id(m)] == best_quality]
        best_not_largest = [m for m in best if m not in largest]
        if not best_not_largest:
            return 0.0
        if self in best_not_largest:
            return 1.0 / (count * len(best_not_largest))
        if self in largest:
            return -1.0 / (count * len(largest))
        return 0.0

    def congestion_avoidance_increase(self, acked_bytes: int) -> float:
        members = self.group.with_rtt() or [self]
        rtt = self.smoothed_rtt or 1.0
        w = self.window / self.mss  # packets
        total_rate = sum((m.window / m.mss) / (m.smoothed_rtt or 1.0) for m in members)
        per_packet = (w / rtt**2) / total_rate**2 + self.alpha() / w
        return per_packet * (acked_bytes / self.mss) * self.mss


def _loss_interval(member: CongestionControl) -> int:
    """An OLIA member's loss interval; a group couples one kind of controller, so every member
    of an OLIA controller's group is one (0 for any other, which never happens)."""
    return member.loss_interval if isinstance(member, OliaCongestionControl) else 0


class BaliaCongestionControl(CongestionControl):
    """BALIA: with x_r = w_r/rtt_r and alpha_r = max_k x_k / x_r, per ACKed packet
    w_r += (x_r / rtt_r) / (sum_k x_k)^2 * (1 + alpha_r)/2 * (4 + alpha_r)/5,
    and on loss w_r -= w_r/2 * min(alpha_r, 1.5)."""

    name = "balia"

    def _rates(self) -> tuple[float, float, float]:
        members = self.group.with_rtt() or [self]
        rates = [(m.window / m.mss) / (m.smoothed_rtt or 1.0) for m in members]
        own = (self.window / self.mss) / (self.smoothed_rtt or 1.0)
        return own, max(rates), sum(rates)

    def alpha(self) -> float:
        own, best, _ = self._rates()
        return best / own

    def congestion_avoidance_increase(self, acked_bytes: int) -> float:
        own, best, total = self._rates()
        alpha = best / own
        rtt = self.smoothed_rtt or 1.0
        per_packet = (own / rtt) / total**2 * (1 + alpha) / 2 * (4 + alpha) / 5
        return per_packet * (acked_bytes / self.mss) * self.mss

    def reduce_on_loss(self) -> float:
        reduced = self.window - self.window / 2 * min(self.alpha(), 1.5)
        return max(reduced, 2.0 * self.mss)
