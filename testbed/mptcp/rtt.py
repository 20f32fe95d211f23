"""RTT estimation and retransmission timeout per RFC 6298 (with Linux's 200 ms floor)."""

from __future__ import annotations

CLOCK_GRANULARITY = 0.001  # G in RFC 6298: we keep time in float seconds, 1 ms is honest


class RttEstimator:
    """SRTT/RTTVAR smoothing and the RTO with exponential backoff.

    Samples must follow Karn's rule (no samples from retransmitted segments); the caller
    enforces that because only it knows what was retransmitted.
    """

    __slots__ = (
        "_rto",
        "backoff",
        "initial_rto",
        "latest",
        "max_rto",
        "min_rto",
        "min_rtt",
        "rttvar",
        "srtt",
    )

    def __init__(self, *, initial_rto: float, min_rto: float, max_rto: float) -> None:
        self.initial_rto = initial_rto
        self.min_rto = min_rto
        self.max_rto = max_rto
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.latest: float | None = None
        self.min_rtt: float | None = None
        self.backoff = 1
        self._rto = self._compute_rto()  # read on every ACK: kept, not recomputed

    def add_sample(self, rtt: float) -> None:
        """Fold one measurement in (RFC 6298 section 2) and clear the backoff (section 5.7)."""
        if rtt < 0:
            raise ValueError(f"RTT sample must be >= 0, got {rtt}")
        self.latest = rtt
        if self.min_rtt is None or rtt < self.min_rtt:
            self.min_rtt = rtt
        if self.srtt is None:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.backoff = 1
        self._rto = self._compute_rto()

    def base_rto(self) -> float:
        srtt = self.srtt
        rto = self.initial_rto if srtt is None else srtt + max(CLOCK_GRANULARITY,
                                                                4 * self.rttvar)
        return min(max(rto, self.min_rto), self.max_rto)

    @property
    def rto(self) -> float:
        """The current timeout, backoff included, clamped to max_rto (RFC 6298 2.5)."""
        return self._rto

    def _compute_rto(self) -> float:
        return min(self.base_rto() * self.backoff, self.max_rto)

    def on_timeout(self) -> None:
        """Back the timer off (RFC 6298 5.5)."""
        if self.base_rto() * self.backoff < self.max_rto:
            self.backoff *= 2
            self._rto = self._compute_rto()
