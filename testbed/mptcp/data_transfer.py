"""The data level of a connection: the DSN-indexed send buffer and its scheduling onto
subflows, data ACKs, MPTCP-level retransmission and reinjection, the data-level reassembly
and the receive buffer the application reads.

    send() -> send buffer -> schedule_mptcp / send_fallback -> Subflow.send_data (one
    mapping per segment) ... peer ... SubflowContext.mapping_receiver -> receive_data ->
    data_reassembly -> receive buffer -> receive()

Internal DSNs are unbounded integers; only their low 64 bits travel on the wire. Events and
closing are the connection's: methods here return what happened.
"""

from __future__ import annotations

from collections.abc import Iterable

from testbed.mptcp.config import StackConfig
from testbed.mptcp.reassembly import Reassembly
from testbed.mptcp.scheduler import Scheduler, eligible_subflows
from testbed.mptcp.scoreboard import SentSegment
from testbed.mptcp.send_buffer import SendBuffer
from testbed.mptcp.subflow_context import SubflowContext
from testbed.wire.types import Dss

MASK64 = (1 << 64) - 1


def unwrap_dsn(value: int, near: int, is_64: bool) -> int:
    """The internal DSN whose low 64 (or 32) bits are `value`, closest to `near`."""
    bits = 64 if is_64 else 32
    mask = (1 << bits) - 1
    delta = (value - near) & mask
    if delta >= 1 << (bits - 1):
        delta -= 1 << bits
    return near + delta


class DataTransfer:
    """Send and receive state of the data-level stream (RFC 8684 3.3)."""

    def __init__(self, *, config: StackConfig, counters: dict[str, int]) -> None:
        self.config = config
        self.counters = counters
        # --- send side (DSNs re-based once keys are known) ---
        self._send_buf = SendBuffer()
        self.snd_data_una = 1
        self.snd_data_nxt = 1
        self.peer_window_right = 1 + 0xFFFF
        self.reinject: list[tuple[int, int]] = []  # (dsn, length) to send again
        self.send_blocked = False  # a send() did not fit: report when space frees
        self.data_fin_requested = False
        self.data_fin_dsn: int | None = None
        self.data_fin_deadline: float | None = None
        self.data_fin_backoff = 1
        self.data_rtx_deadline: float | None = None
        self.data_rtx_backoff = 1
        # --- receive side ---
        self.data_reassembly = Reassembly(1)  # .next: the next DSN expected in order
        self._ack_dss: Dss | None = None
        self._recv_buf = bytearray()
        self.peer_data_fin_dsn: int | None = None  # seen ahead of the in-order data
        self.peer_data_fin_received = False
        self.remote_idsn = 0
        self.bytes_delivered = 0

    # ------------------------------------------------------------------ state
    @property
    def send_end(self) -> int:
        return self.snd_data_una + len(self._send_buf)

    def send_buffer_free(self) -> int:
        return max(0, self.config.send_buffer - len(self._send_buf))

    def receive_window(self) -> int:
        return max(0, self.config.recv_buffer - len(self._recv_buf)
                   - self.data_reassembly.buffered)

    @property
    def readable(self) -> int:
        return len(self._recv_buf)

    def rebase(self, local_idsn: int, remote_idsn: int) -> None:
        """Keys are known: DSNs start after the IDSNs (RFC 8684 3.3.1)."""
        self.snd_data_una = self.snd_data_nxt = local_idsn + 1
        self.remote_idsn = remote_idsn
        self.data_reassembly = Reassembly(remote_idsn + 1)

    def data_ack_dss(self) -> Dss:
        """The data-ACK-only DSS; options are immutable, so one serves every ACK until the
        data level moves (several ACKs per advance on a busy receiver)."""
        cached = self._ack_dss
        value = self.data_reassembly.next & MASK64
        if cached is None or cached.data_ack != value:
            cached = self._ack_dss = Dss(data_ack=value)
        return cached

    # ------------------------------------------------------------------ application side
    def send(self, data: bytes | memoryview) -> int:
        accepted = min(len(data), self.send_buffer_free())
        if accepted < len(data):
            self.send_blocked = True
        if accepted:
            self._send_buf.append(data[:accepted])
        return accepted

    def receive(self, max_bytes: int) -> bytes:
        buf = self._recv_buf
        if max_bytes < 0 or max_bytes >= len(buf):
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:max_bytes])
            del buf[:max_bytes]
        return data

    # ------------------------------------------------------------------ receive side
    def receive_data(self, dsn: int, data: bytes) -> int:
        """Data mapped to `dsn` arrived; returns the bytes now readable when the receive
        buffer went from empty to non-empty (0 otherwise)."""
        reassembly = self.data_reassembly
        if dsn + len(data) <= reassembly.next:
            self.counters["DuplicateData"] += 1
            return 0
        if dsn > reassembly.next:
            self.counters["OFOQueue"] += 1
        in_order = reassembly.add(dsn, data)
        if not in_order:
            return 0
        was_empty = not self._recv_buf
        self._recv_buf += in_order
        self.bytes_delivered += len(in_order)
        return len(in_order) if was_empty else 0

    def on_data_ack(self, ack: int) -> bool:
        """A data ACK for `ack`; True when it freed send-buffer space a blocked send()
        waits for."""
        if ack <= self.snd_data_una:
            return False
        end = self.send_end + (1 if self.data_fin_dsn is not None else 0)
        if ack > end:
            return False
        freed = min(ack, self.send_end) - self.snd_data_una
        self._send_buf.drop(freed)
        self.snd_data_una = ack
        if self.snd_data_nxt < ack:
            self.snd_data_nxt = ack
        self.data_rtx_deadline = None
        self.data_rtx_backoff = 1
        if self.send_blocked and freed:
            self.send_blocked = False
            return True
        return False

    @property
    def data_fin_acked(self) -> bool:
        return self.data_fin_dsn is not None and self.snd_data_una > self.data_fin_dsn

    # ------------------------------------------------------------------ send side
    def send_fallback(self, context: SubflowContext, now: float) -> None:
        """Plain TCP after fallback: the whole stream on the one subflow."""
        subflow = context.tcp
        while self.snd_data_nxt < self.send_end:
            room = subflow.send_space()
            if room <= 0:
                if subflow.window_limited() and subflow.snd_nxt == subflow.snd_una:
                    subflow.arm_probe(now)
                break
            size = min(subflow.mss, room, self.send_end - self.snd_data_nxt)
            subflow.send_data(self._send_buf.view(self.snd_data_nxt - self.snd_data_una, size),
                              self.snd_data_nxt, now, context)
            self.snd_data_nxt += size

    def schedule_mptcp(self, eligible: list[SubflowContext], scheduler: Scheduler,
                       now: float) -> None:
        """Put reinjections, then new data, on the subflows the scheduler picks, as far as
        the subflows' and the peer's windows allow."""
        if not self.reinject and self.snd_data_nxt >= self.send_end:
            return
        if not eligible:
            return
        # nothing below changes the send buffer, snd_data_una or a subflow's MSS: read once
        una = self.snd_data_una
        send_end = self.send_end
        view = self._send_buf.view
        single = eligible[0] if len(eligible) == 1 else None
        sticky: SubflowContext | None = None
        sticky_chosen: list[SubflowContext] = []
        sticky_mss = 0
        while True:
            if self.reinject:
                dsn, length = self.reinject[0]
                if length <= 0 or dsn + length <= una:
                    self.reinject.pop(0)
                    continue
                if dsn < una:
                    length -= una - dsn
                    dsn = una
                available = length
                reinjecting = True
            else:
                dsn = self.snd_data_nxt
                available = send_end - dsn
                reinjecting = False
                if available <= 0:
                    return
            window = self.peer_window_right - dsn
            if window <= 0 and not reinjecting:
                if all(c.tcp.snd_nxt == c.tcp.snd_una for c in eligible):
                    eligible[0].tcp.arm_probe(now)
                return
            if single is not None:
                tcp = single.tcp
                space = tcp.send_space()
                if space <= 0:
                    if tcp.snd_nxt == tcp.snd_una and tcp.window_limited():
                        tcp.arm_probe(now)
                    return
                chosen = eligible
                size = min(available, tcp.mss, space)
            elif sticky is not None and (space := sticky.tcp.send_space()) > 0:
                chosen = sticky_chosen  # the choice cannot change until its room is used up
                size = min(available, sticky_mss, space)
            else:
                ready = [c for c in eligible if c.tcp.send_space() > 0]
                if not ready:
                    if all(c.tcp.snd_nxt == c.tcp.snd_una and c.tcp.window_limited()
                           for c in eligible):
                        eligible[0].tcp.arm_probe(now)
                    return
                chosen = scheduler.select(ready)
                if scheduler.sticky and len(chosen) == 1:
                    sticky, sticky_chosen, sticky_mss = chosen[0], chosen, chosen[0].tcp.mss
                else:
                    sticky = None
                size = available
                for context in chosen:
                    size = min(size, context.tcp.mss, context.tcp.send_space())
            if not reinjecting and window < size:
                size = window
            payload = view(dsn - una, size)
            for context in chosen:
                context.tcp.send_data(payload, dsn, now, context)
            if reinjecting:
                self.counters["Reinjected"] += 1
                rest = length - size
                if rest > 0:
                    self.reinject[0] = (dsn + size, rest)
                else:
                    self.reinject.pop(0)
            else:
                self.snd_data_nxt = dsn + size

    def arm_data_retransmission(self, live: list[SubflowContext], now: float) -> None:
        """MPTCP-level retransmission (as Linux's msk timer): data that every subflow has
        delivered but the peer never acknowledged at data level goes again."""
        if (self.data_rtx_deadline is not None or self.snd_data_una >= self.snd_data_nxt
                or self.reinject):
            return
        if any(c.tcp.snd_nxt != c.tcp.snd_una for c in live):
            return
        usable = eligible_subflows(live)
        if usable:
            rto = max(c.tcp.rtt.rto for c in usable)
            self.data_rtx_deadline = now + rto * self.data_rtx_backoff

    def data_retransmission_due(self, now: float, mptcp: bool) -> None:
        if self.data_rtx_deadline is None or now < self.data_rtx_deadline:
            return
        self.data_rtx_deadline = None
        self.data_rtx_backoff = min(self.data_rtx_backoff * 2, 64)
        if mptcp and self.snd_data_una < self.snd_data_nxt:
            self.reinject.append((self.snd_data_una, self.snd_data_nxt - self.snd_data_una))

    def reinject_unconfirmed(self, segments: Iterable[SentSegment]) -> None:
        """Send again, elsewhere, the payload of these segments that the peer has not
        acknowledged at data level (merged into contiguous ranges)."""
        una = self.snd_data_una
        ranges: list[tuple[int, int]] = []
        for segment in segments:
            dsn = segment.dsn
            if dsn is None or not segment.payload or dsn + len(segment.payload) <= una:
                continue
            if ranges and ranges[-1][0] + ranges[-1][1] == dsn:
                ranges[-1] = (ranges[-1][0], ranges[-1][1] + len(segment.payload))
            else:
                ranges.append((dsn, len(segment.payload)))
        self.reinject.extend(ranges)

    def note_unconfirmed(self, context: SubflowContext, segments: list[SentSegment]) -> None:
        """Remember what the subflow delivered but the peer has not acknowledged at data
        level yet (after this segment's data ACK): if the subflow dies, it goes again."""
        unconfirmed = context.acked_unconfirmed
        una = self.snd_data_una
        for segment in segments:
            dsn = segment.dsn
            if dsn is not None and dsn + len(segment.payload) > una and segment.payload:
                unconfirmed.append((dsn, len(segment.payload)))
        while unconfirmed and unconfirmed[0][0] + unconfirmed[0][1] <= una:
            unconfirmed.popleft()

    def reinject_all_of(self, context: SubflowContext) -> None:
        """The subflow closed: everything it carried that the peer has not acknowledged at
        data level goes again on the others."""
        ranges = list(context.acked_unconfirmed)
        ranges += [(s.dsn, len(s.payload)) for s in context.tcp.scoreboard.unacked()
                   if s.dsn is not None and s.payload]
        for dsn, length in ranges:
            if dsn + length > self.snd_data_una:
                self.reinject.append((dsn, length))

    def on_peer_data_fin(self, dsn: int) -> str:
        """The peer's DATA_FIN at `dsn`: "again" (received before), "ahead" (data before it
        is missing; remembered) or "now" (in order: the peer's stream is complete)."""
        if self.peer_data_fin_received:
            return "again"
        if dsn != self.data_reassembly.next:
            if dsn > self.data_reassembly.next:
                self.peer_data_fin_dsn = dsn
            return "ahead"
        self.data_reassembly.next += 1
        self.peer_data_fin_received = True
        self.peer_data_fin_dsn = None
        return "now"

    def retroactive_base(self, context: SubflowContext) -> tuple[int, int] | None:
        """(subflow offset, DSN) of the first byte not yet DATA_ACKed, for an infinite mapping
        that acts retroactively from there (RFC 8684 3.7); None when the subflow's bytes do
        not map contiguously (it carried re-injected data), where no infinite mapping fits."""
        subflow = context.tcp
        delta = subflow.snd_nxt - self.snd_data_nxt
        for segment in subflow.scoreboard:
            if segment.dsn is not None and segment.payload and segment.start - segment.dsn != delta:
                return None
        return self.snd_data_una + delta, self.snd_data_una

    def fallback_acked(self, segments: list[SentSegment]) -> int:
        """After fallback the subflow's ACKs are the data ACKs: the data level reached."""
        best = self.snd_data_una
        for segment in segments:
            if segment.dsn is not None:
                best = max(best, segment.dsn + len(segment.payload))
        return min(best, self.send_end)
