"""The data level of one direction of an MPTCP connection: DSNs sent, data ACKs, reinjections,
out-of-order delay, DATA_FIN.

DSNs are kept relative to the sender's IDSN (the first data byte is DSN 1), so plots of
different connections share an origin. Everything here is bounded: sent data is a list of
disjoint ranges (it stays short unless the capture lost packets), out-of-order arrivals wait in
a heap bounded by the reordering, and the delays go into a log-spaced histogram.
"""

from __future__ import annotations

import bisect
import heapq
import math
from typing import Any

M64 = (1 << 64) - 1
_HALF64 = 1 << 63
# OFO-delay histogram: bucket 0 is "no delay", then 20 buckets per decade from 1 us to 1000 s
OFO_BUCKETS_PER_DECADE = 20
OFO_MIN_S = 1e-6
OFO_BUCKETS = 1 + 9 * OFO_BUCKETS_PER_DECADE
OFO_PENDING_LIMIT = 100_000
REINJECTION_EVENT_LIMIT = 2000

# bin fields: highest DSN end sent, lowest DSN start sent (both per subflow, in `dsn_bins`),
# highest data ACK (in `ack_bins`)


def expand(value: int, bits64: bool, near: int) -> int:
    """A 32-bit DSN or data ACK widened to the 64-bit value nearest `near` (RFC 8684 3.3.1)."""
    if bits64:
        return value
    return near + ((value - (near & 0xFFFFFFFF) + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def ofo_bucket(delay: float) -> int:
    if delay < OFO_MIN_S:
        return 0
    return min(OFO_BUCKETS - 1, 1 + int(math.log10(delay / OFO_MIN_S) * OFO_BUCKETS_PER_DECADE))


def ofo_bucket_upper_s(bucket: int) -> float:
    """The upper edge of a histogram bucket, in seconds (bucket 0: below 1 us)."""
    return OFO_MIN_S * 10 ** (bucket / OFO_BUCKETS_PER_DECADE)


class DataDirection:
    """What one end of an MPTCP connection sent at the data level."""

    def __init__(self, idsn: int | None) -> None:
        self.idsn = idsn  # None until the key is known (or guessed from the first DSN)
        self.last_dsn = idsn or 0  # absolute 64-bit, for widening 32-bit values
        self.sent: list[list[int]] = []  # disjoint [start, end) relative DSN ranges, sorted
        self.bytes_mapped = 0  # distinct payload bytes given a DSN
        self.reinjected_bytes = 0
        self.reinjected_other_subflow = 0
        self.reinjections: list[dict[str, Any]] = []
        self.reinjection_events_dropped = 0
        self.data_ack = 0  # highest relative data ACK the other end sent
        self.data_ack_abs: int | None = None
        self.data_fin_dsn: int | None = None
        self.data_fin_ts: float | None = None
        self.dsn_bins: dict[tuple[int, int], list[int]] = {}  # (bin, subflow) -> [low, high]
        self.ack_bins: dict[int, int] = {}
        self.next_in_order = 1
        self.pending: list[tuple[int, int, float]] = []  # heap of (start, end, arrival)
        self.ofo_histogram = [0] * OFO_BUCKETS  # bytes per delay bucket
        self.ofo_max_s = 0.0
        self.ofo_dropped = 0
        self.last_subflow: dict[tuple[int, int], int] = {}  # range start -> subflow (recent)

    def relative(self, dsn: int, bits64: bool) -> int:
        """A DSN on the wire, relative to the IDSN (first data byte: 1)."""
        if self.idsn is None:  # handshake not captured: the first DSN seen becomes 1
            self.idsn = (expand(dsn, True, 0) - 1) & M64 if bits64 else (dsn - 1)
            self.last_dsn = self.idsn
        absolute = expand(dsn, bits64, self.last_dsn)
        self.last_dsn = absolute
        rel = (absolute - self.idsn) & M64
        return rel - (1 << 64) if rel >= _HALF64 else rel

    def acknowledge(self, data_ack: int, bits64: bool, bin_index: int) -> None:
        idsn = self.idsn
        if idsn is None:
            return
        if bits64:
            absolute = data_ack
        else:
            absolute = expand(data_ack, False, self.data_ack_abs if self.data_ack_abs is not None
                              else self.last_dsn)
        self.data_ack_abs = absolute
        rel = (absolute - idsn) & M64
        if rel < _HALF64 and rel > self.data_ack:
            self.data_ack = rel
            self.ack_bins[bin_index] = rel

    def sent_range(self, start: int, end: int, subflow: int, ts: float, bin_index: int,
                   retransmitted_on_subflow: bool) -> int:
        """Record DSNs [start, end) sent on `subflow`; returns the bytes sent before (a
        reinjection unless the subflow itself retransmitted the segment)."""
        key = (bin_index, subflow)
        entry = self.dsn_bins.get(key)
        if entry is None:
            self.dsn_bins[key] = [start, end]
        else:
            if start < entry[0]:
                entry[0] = start
            if end > entry[1]:
                entry[1] = end
        self._arrival(start, end, ts)
        sent = self.sent
        if sent and start >= sent[-1][1]:  # the common case: new data at the top
            if start == sent[-1][1]:
                sent[-1][1] = end
            else:
                sent.append([start, end])
            self.bytes_mapped += end - start
            return 0
        if not sent:
            sent.append([start, end])
            self.bytes_mapped += end - start
            return 0
        overlap = self._insert(start, end)
        self.bytes_mapped += end - start - overlap
        if overlap and not retransmitted_on_subflow:
            self.reinjected_bytes += overlap
            if len(self.reinjections) < REINJECTION_EVENT_LIMIT:
                self.reinjections.append({"t": ts, "dsn": start, "length": end - start,
                                          "repeated_bytes": overlap, "subflow": subflow})
            else:
                self.reinjection_events_dropped += 1
        return overlap

    def _insert(self, start: int, end: int) -> int:
        """Merge [start, end) into the sorted disjoint ranges; returns the bytes already in."""
        sent = self.sent
        index = bisect.bisect_left(sent, [start, start])
        if index and sent[index - 1][1] >= start:
            index -= 1
        overlap = 0
        new_start, new_end = start, end
        last = index
        while last < len(sent) and sent[last][0] <= end:
            low, high = sent[last]
            overlap += max(0, min(high, end) - max(low, start))
            new_start, new_end = min(new_start, low), max(new_end, high)
            last += 1
        sent[index:last] = [[new_start, new_end]]
        return overlap

    def _arrival(self, start: int, end: int, ts: float) -> None:
        """Out-of-order delay at the capture point: bytes wait until everything before them
        has arrived."""
        histogram = self.ofo_histogram
        if end <= self.next_in_order:
            return
        if start > self.next_in_order:
            if len(self.pending) < OFO_PENDING_LIMIT:
                heapq.heappush(self.pending, (start, end, ts))
            else:
                self.ofo_dropped += end - start
            return
        histogram[0] += end - self.next_in_order
        self.next_in_order = end
        pending = self.pending
        while pending and pending[0][0] <= self.next_in_order:
            p_start, p_end, arrived = heapq.heappop(pending)
            if p_end <= self.next_in_order:
                continue
            delay = ts - arrived
            histogram[ofo_bucket(delay)] += p_end - max(p_start, self.next_in_order)
            if delay > self.ofo_max_s:
                self.ofo_max_s = delay
            self.next_in_order = p_end

    def ofo_cdf(self) -> list[tuple[float, float]]:
        """(delay upper edge in ms, fraction of bytes delivered within it), from the histogram."""
        total = sum(self.ofo_histogram)
        if not total:
            return []
        points = []
        running = 0
        for bucket, count in enumerate(self.ofo_histogram):
            if not count:
                continue
            running += count
            points.append((round(1000 * ofo_bucket_upper_s(bucket), 6), running / total))
        return points

    def summary(self) -> dict[str, Any]:
        total = sum(self.ofo_histogram)
        delayed = total - self.ofo_histogram[0]
        return {
            "bytes": self.bytes_mapped,
            "highest_dsn": self.sent[-1][1] - 1 if self.sent else 0,
            "data_acked": max(0, self.data_ack - 1 - (1 if self.data_fin_dsn is not None
                                                      and self.data_ack > self.data_fin_dsn else 0)),
            "holes": max(0, len(self.sent) - 1),
            "reinjected_bytes": self.reinjected_bytes,
            "reinjections": len(self.reinjections) + self.reinjection_events_dropped,
            "data_fin_dsn": self.data_fin_dsn,
            "ofo_bytes_delayed": delayed,
            "ofo_fraction_delayed": round(delayed / total, 6) if total else None,
            "ofo_max_delay_ms": round(1000 * self.ofo_max_s, 3),
        }
