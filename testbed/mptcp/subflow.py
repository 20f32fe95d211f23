"""One TCP subflow: handshake, reliable delivery, SACK loss recovery, flow control, close.

The subflow is plain TCP and knows nothing of MPTCP (aioquic shape): `receive(segment, now)`
processes one segment and returns what happened as a `SegmentReceived` value (handshake step,
segments newly acknowledged, in-order bytes, FIN, RST, close); the connection acts on it and
then calls `send_due(now, options)` for the ACKs and retransmissions the segment made due.
Whatever goes on an outgoing segment besides TCP's own options, and the receive window, comes
from the `OptionProvider` passed explicitly to every method that sends. Nothing is called
back while a segment is processed.

Sequence numbers are handled as unbounded offsets relative to the ISNs (our SYN is offset 0,
our first payload byte offset 1; likewise for the peer), converted from/to 32-bit wire values
only at the edge. That makes every comparison a plain integer comparison and makes the DSS
"relative subflow sequence number" simply the offset modulo 2**32.

Timers are deadlines (floats) on the object; the host asks for the earliest one. There is no
timer object per segment: one retransmission deadline covers the oldest outstanding segment.
"""

from __future__ import annotations

import random
from typing import Final, Protocol

from testbed.mptcp.addresses import IPV6_EXTRA_HEADER, IPV6_MIN_MTU_MSS, is_ipv6
from testbed.mptcp.cc.base import CongestionControl
from testbed.mptcp.config import StackConfig
from testbed.mptcp.reassembly import Reassembly
from testbed.mptcp.rtt import RttEstimator
from testbed.mptcp.scoreboard import Scoreboard, SentSegment
from testbed.mptcp.tcp_state import (
    RECEIVE_OPEN,
    SEND_OPEN,
    TcpEvent,
    TcpState,
    transition,
)
from testbed.wire.tcp_options import encoded_length
from testbed.wire.types import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    MaximumSegmentSize,
    Packet,
    Sack,
    SackPermitted,
    TcpOption,
    TcpSegment,
    Timestamps,
    WindowScale,
)

MASK32 = 0xFFFFFFFF
HALF32 = 0x80000000
MAX_OPTION_SPACE = 40
DEFAULT_PEER_MSS = 536  # RFC 9293 when no MSS option


class OptionProvider(Protocol):
    """What a subflow asks for while it builds a segment, passed in at send time: the
    options of the layer above (MPTCP) within the byte budget left, and the window."""

    def handshake_options(self) -> list[TcpOption]: ...

    def ack_options(self, budget: int) -> list[TcpOption]: ...

    def data_options(self, segment: SentSegment, budget: int) -> list[TcpOption]: ...

    def receive_window(self) -> int: ...


class OpeningStep:
    """Which opening step a received segment completed (`SegmentReceived.opening_step`)."""

    NONE: Final = 0
    SYNACK: Final = 1  # our SYN was answered (active open): the subflow is ESTABLISHED
    THIRD_ACK: Final = 2  # our SYN/ACK was acknowledged (passive open): the subflow is ESTABLISHED


class SegmentReceived:
    """What one received segment did to the subflow, for the connection to act on, in this
    order: `opening_step`, options (when `options_apply`), `acked`, `closed_reason`, `data`,
    `fin`. A value: nothing of it is kept on the subflow."""

    __slots__ = ("acked", "closed_reason", "data", "data_offset", "fin", "offset",
                 "opening_step", "options_apply", "reply_due", "rst", "segment")

    def __init__(self, segment: TcpSegment) -> None:
        self.segment = segment
        self.opening_step = OpeningStep.NONE
        self.rst = False  # an acceptable RST closed the subflow
        self.options_apply = False  # the ACK was acceptable: act on the segment's options
        self.offset = 0  # subflow offset of the segment's first sequence number
        self.acked: list[SentSegment] | None = None  # newly acknowledged, oldest first
        self.closed_reason: str | None = None  # the subflow closed while processing
        self.data_offset = 0  # subflow offset of `data`
        self.data = b""  # bytes that became in order
        self.fin = False  # the peer's FIN became in order
        self.reply_due = False  # send_due has something to send (an ACK, a retransmission)


def _option_bytes(options: list[TcpOption]) -> int:
    return sum(encoded_length(option) for option in options)


class Subflow:
    """A TCP connection carrying one MPTCP subflow (or the whole connection after fallback)."""

    def __init__(self, *, local_address: str, local_port: int,
                 remote_address: str, remote_port: int, config: StackConfig,
                 rng: random.Random, cc: CongestionControl, now: float,
                 subflow_id: int, local_queue_room: dict[str, int] | None = None) -> None:
        self.subflow_id = subflow_id
        # the host's room for frames in its own queues, per local address (MptcpHost), this
        # subflow's share of it (None: no limit), and whether the share, not the windows,
        # limited the last send_space
        self.local_queue_room: dict[str, int] = {} if local_queue_room is None else local_queue_room
        self.local_quota: int | None = None
        self.locally_throttled = False
        self.local_address = local_address
        self.local_port = local_port
        self.remote_address = remote_address
        self.remote_port = remote_port
        self.config = config
        self.cc = cc
        self.state = TcpState.CLOSED
        self.created_at = now
        # --- send side (offsets relative to our ISN) ---
        self.iss = rng.getrandbits(32)
        self.snd_una = 0
        self.snd_nxt = 0
        self.snd_wnd = 0xFFFF
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        # config.mss is the IPv4 one (MTU - 40); the IPv6 header is 20 bytes longer
        ipv6 = is_ipv6(local_address)
        self.local_mss = config.mss - IPV6_EXTRA_HEADER if ipv6 else config.mss
        self.peer_mss = IPV6_MIN_MTU_MSS if ipv6 else DEFAULT_PEER_MSS
        self.peer_window_shift = 0
        self.our_window_shift = 0
        self.sack_ok = False
        self.ts_ok = False
        self.ts_offset = rng.getrandbits(32)
        self.ts_recent = 0
        self._ts_option: Timestamps | None = None  # the last one sent, reused while equal
        self.scoreboard = Scoreboard(dupthresh=config.dupack_threshold)
        self.rtt = RttEstimator(initial_rto=config.initial_rto, min_rto=config.min_rto,
                                max_rto=config.max_rto)
        self.dupacks = 0
        self.in_recovery = False
        self.recovering_from_rto = False  # slow start, not fast recovery's held window
        self.recovery_point = 0
        self.fin_offset: int | None = None  # offset of our FIN once sent
        self.syn_transmissions = 0
        self.retransmit_count = 0  # consecutive RTO expiries without progress
        # --- receive side (offsets relative to the peer's ISN) ---
        self.irs = 0
        self.rcv = Reassembly(1)
        self.rcv_adv_end = 0  # right edge of the window we advertised
        self.peer_fin_offset: int | None = None
        self.unacked_segments = 0
        self.ack_pending = False
        self.last_window_advertised = 0
        # --- timers (absolute deadlines) ---
        self.rto_deadline: float | None = None
        self.delack_deadline: float | None = None
        self.timewait_deadline: float | None = None
        self.probe_deadline: float | None = None
        self.probe_backoff = 1
        # --- output ---
        self.outbox: list[Packet] = []
        # --- set by the layer above, meaningful to TCP ---
        self.reserved_option_bytes = 0  # option bytes every data segment carries (a DSS)
        self.resend_ack_on_timeout = False  # RTO with nothing outstanding resends a pure ACK
        self.is_passive = False
        self.synack_due = False  # a retransmitted SYN arrived: send the SYN/ACK again
        self.bytes_sent = 0
        self.bytes_received = 0
        self.bytes_retrans = 0  # payload bytes sent again (tcpi_bytes_retrans)
        self.total_retrans = 0  # segments sent again (tcpi_total_retrans)
        self.close_reason: str | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def four_tuple(self) -> tuple[str, int, str, int]:
        return (self.local_address, self.local_port, self.remote_address, self.remote_port)

    @property
    def mss(self) -> int:
        """Payload bytes per segment: the smaller MSS, less the options every data segment
        carries (timestamps, and the DSS the connection reserves), padded to 4 bytes, so
        that header + options + payload never exceed the path MTU the MSS came from."""
        options = (10 if self.ts_ok else 0) + self.reserved_option_bytes
        return min(self.local_mss, self.peer_mss) - ((options + 3) & ~3)

    @property
    def is_closed(self) -> bool:
        return self.state is TcpState.CLOSED

    def _rcv_offset(self, wire_seq: int) -> int:
        delta = (wire_seq - self.irs - self.rcv.next) & MASK32
        if delta >= HALF32:
            delta -= 1 << 32
        return self.rcv.next + delta

    def _snd_offset(self, wire_ack: int) -> int:
        delta = (wire_ack - self.iss - self.snd_una) & MASK32
        if delta >= HALF32:
            delta -= 1 << 32
        return self.snd_una + delta

    def in_flight(self) -> int:
        return self.snd_nxt - self.snd_una

    def send_space(self) -> int:
        """Bytes the subflow may send now: congestion window and peer window, whichever is
        tighter (0 when the subflow cannot carry data)."""
        state = self.state
        if ((state is not TcpState.ESTABLISHED and state not in SEND_OPEN)
                or self.fin_offset is not None):
            return 0
        cwnd_room = self.cc.cwnd - self.scoreboard.pipe
        window_room = self.snd_una + self.snd_wnd - self.snd_nxt
        room = min(cwnd_room, window_room)
        quota = self.local_quota
        if quota is not None:
            # TCP Small Queues' rule: no more than a few frames in our own interface's queue
            local_room = max(quota, 0) * self.mss
            self.locally_throttled = local_room < room
            if self.locally_throttled:
                return local_room
        return room

    def window_limited(self) -> bool:
        return self.snd_una + self.snd_wnd - self.snd_nxt <= 0

    def next_deadline(self) -> float | None:
        # unrolled (asked after every packet): the RTO and delayed-ACK deadlines are the
        # usual ones, the persist and TIME_WAIT deadlines are rarely set
        best = self.rto_deadline
        deadline = self.delack_deadline
        if deadline is not None and (best is None or deadline < best):
            best = deadline
        deadline = self.probe_deadline
        if deadline is not None and (best is None or deadline < best):
            best = deadline
        deadline = self.timewait_deadline
        if deadline is not None and (best is None or deadline < best):
            best = deadline
        return best

    def _set_state(self, event: TcpEvent) -> None:
        self.state = transition(self.state, event)

    def _tsval(self, now: float) -> int:
        return (int(now * 1000) + self.ts_offset) & MASK32

    # ------------------------------------------------------------------ output
    def _emit(self, flags: int, seq_offset: int, options: list[TcpOption], window: int,
              payload: bytes = b"", *, ack: bool = True) -> None:
        window = self._window_field(window, flags & SYN)
        # positional (src_port, dst_port, seq, ack, flags, window, options, payload): the
        # hottest constructor of the stack, and keyword passing costs measurably more
        segment = TcpSegment(self.local_port, self.remote_port, (self.iss + seq_offset) & MASK32,
                             ((self.irs + self.rcv.next) & MASK32) if ack else 0,
                             flags, window, options, payload)
        self.outbox.append(Packet(self.local_address, self.remote_address, segment))
        if flags & ACK:
            self.ack_pending = False
            self.unacked_segments = 0
            self.delack_deadline = None

    def _window_field(self, window: int, syn: int) -> int:
        window = max(0, window)
        if syn:
            field = min(window, 0xFFFF)
            self.rcv_adv_end = max(self.rcv_adv_end, self.rcv.next + field)
            return field
        shift = self.our_window_shift
        field = window >> shift
        if field > 0xFFFF:
            field = 0xFFFF
        advertised = field << shift
        advertised_end = self.rcv.next + advertised
        if advertised_end > self.rcv_adv_end:
            self.rcv_adv_end = advertised_end
        self.last_window_advertised = advertised
        return field

    def _base_options(self, now: float) -> list[TcpOption]:
        if self.ts_ok:
            # options are immutable: one Timestamps serves every segment of the same
            # millisecond with the same echo (most segments of a busy subflow)
            tsval = (int(now * 1000) + self.ts_offset) & MASK32
            cached = self._ts_option
            if cached is None or cached.tsval != tsval or cached.tsecr != self.ts_recent:
                cached = self._ts_option = Timestamps(tsval, self.ts_recent)
            return [cached]
        return []

    def _budget(self) -> int:
        """Option bytes left after the timestamp option."""
        return MAX_OPTION_SPACE - 10 if self.ts_ok else MAX_OPTION_SPACE

    def _add_sack(self, options: list[TcpOption]) -> None:
        if not self.sack_ok or not self.rcv.buffered:
            return
        room = MAX_OPTION_SPACE - _option_bytes(options) - 2
        count = min(4, room // 8)
        if count <= 0:
            return
        base = self.irs
        blocks = tuple(((base + s) & MASK32, (base + e) & MASK32)
                       for s, e in self.rcv.ranges(count))
        options.append(Sack(blocks))

    def send_ack(self, now: float, options: OptionProvider) -> None:
        """A pure ACK now (carrying whatever the provider has pending for it)."""
        tcp_options = self._base_options(now)
        tcp_options.extend(options.ack_options(self._budget()))
        self._add_sack(tcp_options)
        self._emit(ACK, self.snd_nxt, tcp_options, options.receive_window())

    def _syn_options(self, now: float, synack: bool,
                     provider: OptionProvider) -> list[TcpOption]:
        config = self.config
        options: list[TcpOption] = [MaximumSegmentSize(self.local_mss)]
        if config.sack and (not synack or self.sack_ok):
            options.append(SackPermitted())
        if config.timestamps and (not synack or self.ts_ok):
            options.append(Timestamps(self._tsval(now), self.ts_recent if synack else 0))
        if config.window_scaling and (not synack or self.peer_window_shift >= 0):
            options.append(WindowScale(self.our_window_shift))
        options.extend(provider.handshake_options())
        return options

    # ------------------------------------------------------------------ open
    def open_active(self, now: float, options: OptionProvider) -> None:
        """Send the SYN (client side)."""
        self._set_state(TcpEvent.ACTIVE_OPEN)
        self.our_window_shift = self.config.window_shift
        self.snd_nxt = 1
        self._send_syn(now, options)

    def _send_syn(self, now: float, options: OptionProvider) -> None:
        self.syn_transmissions += 1
        self._emit(SYN, 0, self._syn_options(now, False, options), options.receive_window(),
                   ack=False)
        self.rto_deadline = now + self.rtt.rto

    def open_passive(self, syn: TcpSegment, now: float, options: OptionProvider) -> None:
        """Answer a SYN that arrived on a listening port with a SYN/ACK."""
        self._set_state(TcpEvent.PASSIVE_OPEN)
        self.irs = syn.seq
        self._read_syn_options(syn)
        self.our_window_shift = self.config.window_shift if self.peer_window_shift >= 0 else 0
        if self.peer_window_shift < 0:
            self.peer_window_shift = 0
        self.is_passive = True
        self.snd_wnd = syn.window
        self.snd_nxt = 1
        self._send_synack(now, options)

    def _send_synack(self, now: float, options: OptionProvider) -> None:
        self.syn_transmissions += 1
        self._emit(SYN | ACK, 0, self._syn_options(now, True, options), options.receive_window())
        self.rto_deadline = now + self.rtt.rto

    def _read_syn_options(self, segment: TcpSegment) -> None:
        self.peer_window_shift = -1
        self.sack_ok = False
        self.ts_ok = False
        for option in segment.options:
            kind = type(option)
            if kind is MaximumSegmentSize:
                self.peer_mss = option.mss  # type: ignore[union-attr]
            elif kind is WindowScale and self.config.window_scaling:
                self.peer_window_shift = min(option.shift, 14)  # type: ignore[union-attr]
            elif kind is SackPermitted and self.config.sack:
                self.sack_ok = True
            elif kind is Timestamps and self.config.timestamps:
                self.ts_ok = True
                self.ts_recent = option.tsval  # type: ignore[union-attr]

    # ------------------------------------------------------------------ input
    def receive(self, segment: TcpSegment, now: float) -> SegmentReceived:
        """Process one arriving segment addressed to this subflow's four-tuple and say what
        it did. Replies it makes due (ACKs, retransmissions) wait for `send_due`."""
        received = SegmentReceived(segment)
        flags = segment.flags
        if flags & RST:
            self._receive_rst(segment, now, received)
            return received
        state = self.state
        if state is TcpState.SYN_SENT:
            self._receive_in_syn_sent(segment, now, received)
            return received
        if state is TcpState.CLOSED:
            return received
        if flags & SYN:
            self._receive_syn_when_synchronized(segment)
            received.reply_due = True
            return received
        if not flags & ACK:
            return received
        if state is TcpState.SYN_RECEIVED:
            ack_offset = self._snd_offset(segment.ack)
            if ack_offset != 1:
                self._send_rst_for(segment)
                return received
            received.opening_step = OpeningStep.THIRD_ACK
            self._set_state(TcpEvent.RECV_ACK_OF_SYN)
        self._process_ack(segment, now, received)
        if self.state is TcpState.CLOSED:
            return received
        self._process_data(segment, now, received)
        received.reply_due = self.ack_pending or self.scoreboard.lost_count > 0
        return received

    def send_due(self, now: float, options: OptionProvider) -> None:
        """Send what processing received segments made due: a SYN/ACK again, lost segments
        again (as far as the congestion window allows), and the ACK."""
        if self.state is TcpState.CLOSED:
            return
        if self.synack_due:
            self.synack_due = False
            self._send_synack(now, options)
        if self.scoreboard.lost_count:
            self._retransmit_lost(now, options)
        if self.ack_pending:
            self.send_ack(now, options)

    def _receive_rst(self, segment: TcpSegment, now: float, received: SegmentReceived) -> None:
        if self.state is TcpState.SYN_SENT:
            if not segment.flags & ACK or self._snd_offset(segment.ack) != 1:
                return
        elif self.state is TcpState.CLOSED:
            return
        else:
            offset = self._rcv_offset(segment.seq)
            if not self.rcv.next <= offset <= max(self.rcv_adv_end, self.rcv.next + 1):
                return  # RFC 5961 3.2: a RST outside the window is dropped
            if offset != self.rcv.next:
                self.ack_pending = True  # in the window, not exact: a challenge ACK
                return
        self._set_state(TcpEvent.RECV_RST)
        received.rst = True
        if self._terminate("reset"):
            received.closed_reason = "reset"

    def _receive_in_syn_sent(self, segment: TcpSegment, now: float,
                             received: SegmentReceived) -> None:
        flags = segment.flags
        if not flags & ACK or not flags & SYN:
            return  # simultaneous open is not supported
        if ((segment.ack - self.iss) & MASK32) != 1:
            self._send_rst_for(segment)
            return
        self.irs = segment.seq
        self.rcv = Reassembly(1)
        self._read_syn_options(segment)
        if self.peer_window_shift < 0:
            self.peer_window_shift = 0
            self.our_window_shift = 0
        self.snd_una = 1
        self.snd_wnd = segment.window  # never scaled on a SYN
        self.snd_wl1 = 0
        self.snd_wl2 = 1
        if self.syn_transmissions == 1:
            self.rtt.add_sample(now - self.created_at)
            self.cc.on_rtt_measurement(now=now, smoothed_rtt=self.rtt.srtt or 0.0)
        self.rto_deadline = None
        self._set_state(TcpEvent.RECV_SYNACK)
        received.opening_step = OpeningStep.SYNACK
        self.ack_pending = received.reply_due = True  # the third ACK

    def _receive_syn_when_synchronized(self, segment: TcpSegment) -> None:
        """A retransmitted SYN (our SYN/ACK was lost) or SYN/ACK (our third ACK was lost)."""
        if self.state is TcpState.SYN_RECEIVED and not segment.flags & ACK:
            if segment.seq == self.irs:
                self.synack_due = True
            return
        if segment.flags & ACK and segment.seq == self.irs:
            self.ack_pending = True

    def _send_rst_for(self, segment: TcpSegment) -> None:
        if segment.flags & ACK:
            tcp = TcpSegment(src_port=self.local_port, dst_port=self.remote_port,
                             seq=segment.ack, ack=0, flags=RST, window=0)
        else:
            tcp = TcpSegment(src_port=self.local_port, dst_port=self.remote_port, seq=0,
                             ack=(segment.seq + len(segment.payload) + 1) & MASK32,
                             flags=RST | ACK, window=0)
        self.outbox.append(Packet(src=self.local_address, dst=self.remote_address, tcp=tcp))

    def _process_ack(self, segment: TcpSegment, now: float, received: SegmentReceived) -> None:
        ack = self._snd_offset(segment.ack)
        if ack > self.snd_nxt:
            self.ack_pending = True  # acks something never sent: answer with an ACK
            return
        seg_offset = self._rcv_offset(segment.seq)
        if self.ts_ok:
            ts = segment.find(Timestamps)
            if ts is not None and seg_offset <= self.rcv.next:
                self.ts_recent = ts.tsval  # type: ignore[union-attr]
        window = segment.window << self.peer_window_shift
        window_changed = False
        if (self.snd_wl1 < seg_offset
                or (self.snd_wl1 == seg_offset and self.snd_wl2 <= ack)):
            window_changed = window != self.snd_wnd
            if window > self.snd_wnd:
                self.probe_deadline = None
                self.probe_backoff = 1
            self.snd_wnd = window
            self.snd_wl1 = seg_offset
            self.snd_wl2 = ack
        received.options_apply = True
        received.offset = seg_offset
        scoreboard = self.scoreboard
        sack_newly = 0
        if self.sack_ok and scoreboard.first() is not None:
            sack = segment.find(Sack)
            if sack is not None:
                blocks = [(self._snd_offset(left), self._snd_offset(right))
                          for left, right in sack.blocks]  # type: ignore[union-attr]
                sack_newly = scoreboard.apply_sack(blocks)
        if ack > self.snd_una:
            self._on_new_ack(ack, now, received)
        elif (ack == self.snd_una and self.snd_nxt > self.snd_una and not segment.payload
              and not segment.flags & FIN and (not window_changed or sack_newly)):
            self.dupacks += 1
        if self.state is TcpState.CLOSED:
            return
        if sack_newly or self.dupacks >= self.config.dupack_threshold:
            self._detect_loss(now)

    def _on_new_ack(self, ack: int, now: float, received: SegmentReceived) -> None:
        acked_bytes = ack - self.snd_una
        done = self.scoreboard.acknowledge(ack)
        self.snd_una = ack
        self.dupacks = 0
        self.retransmit_count = 0
        rtt_sample = None
        if done:
            newest = done[-1]
            if newest.transmissions == 1:
                rtt_sample = now - newest.sent_at
                self.rtt.add_sample(rtt_sample)
                self.cc.on_rtt_measurement(now=now, smoothed_rtt=self.rtt.srtt or 0.0)
        if self.in_recovery:
            if ack >= self.recovery_point:
                self.in_recovery = self.recovering_from_rto = False
            elif self.recovering_from_rto:
                # RFC 5681 3.1: after a timeout the window grows by slow start while the lost
                # segments go out again; held at one segment it resent a backlog left by an
                # outage one per round trip (0.6 s for about 90 segments on the subway ride)
                self.cc.on_packet_acked(now=now, acked_bytes=acked_bytes)
            elif not self.sack_ok:
                first = self.scoreboard.first()  # NewReno partial ACK (RFC 6582)
                if first is not None:
                    self.scoreboard.mark_lost(first)
        elif not self.locally_throttled or 2 * (self.scoreboard.pipe + acked_bytes) >= self.cc.cwnd:
            # while the local queue limits the sender, cwnd grows only up to twice the flight,
            # Linux's slow-start rule in tcp_is_cwnd_limited: unused, it would grow unbounded
            self.cc.on_packet_acked(now=now, acked_bytes=acked_bytes, snd_una=ack,
                                    snd_nxt=self.snd_nxt, rtt_sample=rtt_sample)
        self.rto_deadline = now + self.rtt.rto if self.snd_nxt > self.snd_una else None
        if self.fin_offset is not None and ack > self.fin_offset:
            self._set_state(TcpEvent.RECV_ACK_OF_FIN)
            if self.state is TcpState.TIME_WAIT:
                self.timewait_deadline = now + self.config.time_wait_s
            elif self.state is TcpState.CLOSED:
                if self._terminate("closed"):
                    received.closed_reason = "closed"
                return
        received.acked = done

    def _detect_loss(self, now: float) -> None:
        if self.snd_nxt == self.snd_una:
            return
        lost = self.scoreboard.detect_losses(self.mss) if self.sack_ok else []
        if (not lost and not self.in_recovery and self.dupacks >= self.config.dupack_threshold
                and self.scoreboard.first() is not None):
            first = self.scoreboard.first()
            assert first is not None
            if not first.lost and first.transmissions == 1:
                self.scoreboard.mark_lost(first)
                lost = [first]
        if lost and not self.in_recovery:
            self.in_recovery = True
            self.recovery_point = self.snd_nxt
            self.cc.on_packets_lost(now=now, lost_bytes=sum(s.length for s in lost))

    def _retransmit_lost(self, now: float, options: OptionProvider) -> None:
        scoreboard = self.scoreboard
        while scoreboard.pipe < self.cc.cwnd:
            segment = scoreboard.next_lost()
            if segment is None:
                return
            self._transmit(segment, now, options, retransmission=True)

    def _process_data(self, segment: TcpSegment, now: float, received: SegmentReceived) -> None:
        payload = segment.payload
        fin = segment.flags & FIN
        if not payload and not fin:
            if self._rcv_offset(segment.seq) < self.rcv.next:
                self.ack_pending = True  # an old sequence number: a window probe
            return
        offset = self._rcv_offset(segment.seq)
        rcv = self.rcv
        state = self.state
        if state is not TcpState.ESTABLISHED and state not in RECEIVE_OPEN:
            if fin and state is TcpState.TIME_WAIT:
                self.timewait_deadline = now + self.config.time_wait_s
            self.ack_pending = True
            return
        if payload:
            end = offset + len(payload)
            limit = max(self.rcv_adv_end, rcv.next)
            if end > limit:
                payload = payload[:max(0, limit - offset)]
                fin = 0
            was_in_order = offset == rcv.next and not rcv.buffered
            had_holes = rcv.buffered > 0
            start = rcv.next
            data = rcv.add(offset, payload) if payload else b""
            if data:
                self.bytes_received += len(data)
                received.data_offset = start
                received.data = data
            if fin:
                self.peer_fin_offset = offset + len(segment.payload)
            if not was_in_order or had_holes or not data:
                self.ack_pending = True  # out of order, filling a hole, or a duplicate
            else:
                self.unacked_segments += 1
                if self.unacked_segments >= 2:
                    self.ack_pending = True
                elif self.delack_deadline is None:
                    self.delack_deadline = now + self.config.delayed_ack_ms / 1000.0
        elif fin:
            self.peer_fin_offset = offset
        if self.peer_fin_offset is not None and self.peer_fin_offset == rcv.next:
            rcv.next += 1
            self.peer_fin_offset = None
            self._set_state(TcpEvent.RECV_FIN)
            if self.state is TcpState.TIME_WAIT:
                self.timewait_deadline = now + self.config.time_wait_s
            self.ack_pending = True
            received.fin = True

    # ------------------------------------------------------------------ send
    def send_data(self, payload: bytes | memoryview, dsn: int | None, now: float,
                  options: OptionProvider) -> SentSegment:
        """Queue and transmit one segment of new data (at most `mss` bytes)."""
        start = self.snd_nxt
        segment = SentSegment(start=start, end=start + len(payload), payload=payload, dsn=dsn,
                              sent_at=now)
        self.snd_nxt = segment.end
        self.scoreboard.add(segment)
        self._transmit(segment, now, options, retransmission=False)
        if self.rto_deadline is None:
            self.rto_deadline = now + self.rtt.rto
        return segment

    def _transmit(self, segment: SentSegment, now: float, provider: OptionProvider, *,
                  retransmission: bool) -> None:
        if retransmission:
            self.scoreboard.on_retransmit(segment, now)
            self.total_retrans += 1
            self.bytes_retrans += len(segment.payload)
        options = self._base_options(now)
        if segment.payload:
            options.extend(provider.data_options(segment, self._budget()))
        else:
            options.extend(provider.ack_options(self._budget()))
        if self.rcv.buffered:
            self._add_sack(options)
        flags = ACK
        if segment.payload:
            flags |= PSH
            self.bytes_sent += len(segment.payload)
            if self.local_quota is not None:
                self.local_quota -= 1
                self.local_queue_room[self.local_address] -= 1
        if segment.fin:
            flags |= FIN
        # A payload may be a view of the send buffer's block (send_buffer.py); the packet
        # carries its own bytes (a bytes payload is passed as is).
        self._emit(flags, segment.start, options, provider.receive_window(),
                   bytes(segment.payload))

    def close(self, now: float, options: OptionProvider) -> str | None:
        """Send our FIN after whatever data is queued (the subflow's half-close). Returns
        the close reason when this closed the subflow outright (before it was open)."""
        if self.state in (TcpState.CLOSED, TcpState.SYN_SENT):
            self._set_state(TcpEvent.CLOSE)
            return "closed" if self._terminate("closed") else None
        if self.fin_offset is not None or self.state not in (
                TcpState.ESTABLISHED, TcpState.CLOSE_WAIT, TcpState.SYN_RECEIVED):
            return None
        self._set_state(TcpEvent.CLOSE)
        start = self.snd_nxt
        segment = SentSegment(start=start, end=start + 1, payload=b"", dsn=None, fin=True,
                              sent_at=now)
        self.fin_offset = start
        self.snd_nxt = start + 1
        self.scoreboard.add(segment)
        self._transmit(segment, now, options, retransmission=False)
        if self.rto_deadline is None:
            self.rto_deadline = now + self.rtt.rto
        return None

    def reset(self, window: int, rst_options: list[TcpOption] | None = None,
              reason: str = "reset") -> str | None:
        """Abort: send a RST (carrying `rst_options`, e.g. MP_TCPRST) and close. Returns
        the close reason when this closed the subflow (None when it was closed already)."""
        if self.state is TcpState.CLOSED:
            return None
        if self.state is not TcpState.SYN_SENT:
            self._emit(RST | ACK, self.snd_nxt, list(rst_options or []), window)
        self._set_state(TcpEvent.ABORT)
        return reason if self._terminate(reason) else None

    def _terminate(self, reason: str) -> bool:
        """Close for good; True the first time (the close the layer above must learn of)."""
        self.state = TcpState.CLOSED
        self.rto_deadline = self.delack_deadline = self.probe_deadline = None
        self.timewait_deadline = None
        if self.close_reason is None:
            self.close_reason = reason
            self.cc.close()
            return True
        return False

    def arm_probe(self, now: float) -> None:
        """Start zero-window probing (the persist timer) if it is not running."""
        if self.probe_deadline is None:
            self.probe_deadline = now + self.rtt.rto * self.probe_backoff

    def resend_ack_until_answered(self, now: float) -> None:
        """Repeat the last pure ACK on every RTO until `stop_resending_ack` (an MP_JOIN
        initiator's third ACK, which is acknowledged only by the peer's fourth)."""
        self.resend_ack_on_timeout = True
        self.rto_deadline = now + self.rtt.rto

    def stop_resending_ack(self) -> None:
        self.resend_ack_on_timeout = False
        if self.snd_nxt == self.snd_una:
            self.rto_deadline = None

    # ------------------------------------------------------------------ timers
    def handle_timer(self, now: float, options: OptionProvider) -> str | None:
        """Act on the deadlines that passed. Returns the close reason when the subflow
        closed (TIME_WAIT over, handshake or retransmission timeout)."""
        if self.timewait_deadline is not None and now >= self.timewait_deadline:
            self.timewait_deadline = None
            self._set_state(TcpEvent.TIMEOUT_2MSL)
            return "closed" if self._terminate("closed") else None
        if self.delack_deadline is not None and now >= self.delack_deadline:
            self.delack_deadline = None
            self.send_ack(now, options)
        if self.probe_deadline is not None and now >= self.probe_deadline:
            self.probe_backoff = min(self.probe_backoff * 2, 64)
            self.probe_deadline = None
            if self.window_limited():
                # window probe: an old sequence number forces the peer to answer with its
                # current window (Linux tcp_xmit_probe_skb)
                self._emit(ACK, self.snd_una - 1, self._base_options(now),
                           options.receive_window())
                self.arm_probe(now)
        if self.rto_deadline is not None and now >= self.rto_deadline:
            self.rto_deadline = None
            return self._on_rto(now, options)
        return None

    def _on_rto(self, now: float, options: OptionProvider) -> str | None:
        self.rtt.on_timeout()
        if self.state is TcpState.SYN_SENT or self.state is TcpState.SYN_RECEIVED:
            if self.syn_transmissions > self.config.syn_retries:
                self._set_state(TcpEvent.ABORT)
                return "timeout" if self._terminate("timeout") else None
            if self.state is TcpState.SYN_SENT:
                self._send_syn(now, options)
            else:
                self._send_synack(now, options)
            return None
        first = self.scoreboard.first()
        if first is None:
            if self.resend_ack_on_timeout:
                self.send_ack(now, options)
                self.rto_deadline = now + self.rtt.rto
            return None
        self.retransmit_count += 1
        if self.retransmit_count > self.config.max_retransmits:
            return self.reset(options.receive_window(), reason="timeout")
        self.cc.on_retransmission_timeout(now=now, repeated=self.retransmit_count > 1)
        self.scoreboard.mark_all_lost()
        self.in_recovery = self.recovering_from_rto = True
        self.recovery_point = self.snd_nxt
        self.dupacks = 0
        self._transmit(first, now, options, retransmission=True)
        self.rto_deadline = now + self.rtt.rto
        return None

    def take_output(self) -> list[Packet]:
        out = self.outbox
        self.outbox = []
        return out
