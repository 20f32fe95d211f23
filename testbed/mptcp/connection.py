"""One MPTCP connection: keys, subflows, the data-level stream, signalling and fallback.

The connection is the `SubflowOwner` of its subflows: they call its hooks for the MPTCP
options to put on segments and for what arrived. Data flow:

    send() -> send buffer (DSN-indexed) -> scheduler -> Subflow.send_data (one mapping per
    segment) ... peer ... Subflow in-order bytes -> MappingReceiver -> data-level Reassembly
    -> receive()

Protocol errors raised by the peer's behaviour (RemoteProtocolError) are caught in exactly
one place, `receive_segment`, and turned into a subflow reset (MP_TCPRST with the reason) or,
when the error poisons the whole connection, a reset of every subflow.

Modes: "pending" (handshake), "mptcp", "fallback" (plain TCP on one subflow; never left).
Internal DSNs are unbounded integers; only their low 64 bits travel on the wire.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from testbed.mptcp import events
from testbed.mptcp.cc import CouplingGroup, create_congestion_control
from testbed.mptcp.config import StackConfig
from testbed.mptcp.counters import new_counters
from testbed.mptcp.errors import LocalProtocolError, RemoteProtocolError
from testbed.mptcp.handshake import HandshakeMixin
from testbed.mptcp.mapping import MappingOutcome, MappingReceiver, unwrap_relative
from testbed.mptcp.path_manager import create_path_manager
from testbed.mptcp.reassembly import Reassembly
from testbed.mptcp.scheduler import create_scheduler, eligible_subflows
from testbed.mptcp.scoreboard import SentSegment
from testbed.mptcp.signalling import SignallingMixin
from testbed.mptcp.subflow import Subflow
from testbed.mptcp.tcp_state import TcpState
from testbed.wire.checksum import dss_checksum
from testbed.wire.crypto import (
    join_ack_hmac,
    key_to_idsn,
    key_to_token,
)
from testbed.wire.tcp_options import encoded_length
from testbed.wire.types import (
    MPCAPABLE_FLAG_CHECKSUM,
    MPCAPABLE_FLAG_HMAC_SHA256,
    MPTCPRST_MIDDLEBOX_INTERFERENCE,
    MPTCPRST_MPTCP_ERROR,
    AddAddr,
    Dss,
    MpCapable,
    MpFail,
    MpFastclose,
    MpJoinAck,
    MpPrio,
    MpTcpRst,
    Packet,
    RemoveAddr,
    TcpOption,
    TcpSegment,
)

if TYPE_CHECKING:
    from testbed.mptcp.host import MptcpHost

MASK32 = 0xFFFFFFFF
MASK64 = (1 << 64) - 1
HALF64 = 1 << 63
PENDING, MPTCP, FALLBACK = "pending", "mptcp", "fallback"

# Connection modes as a table (h11 style): a missing entry is an error naming mode and event.
# There is no way out of FALLBACK: once fallen back a connection never returns to MPTCP.
MODE_TRANSITIONS: dict[str, dict[str, str]] = {
    PENDING: {"keys_exchanged": MPTCP, "fallback": FALLBACK},
    MPTCP: {"fallback": FALLBACK},
    FALLBACK: {},
}


def next_mode(mode: str, event: str) -> str:
    try:
        return MODE_TRANSITIONS[mode][event]
    except KeyError:
        raise LocalProtocolError(f"connection mode machine: event {event} is not allowed in "
                                 f"mode {mode}") from None


# MPTCP options other than DSS that on_segment_options acts on
_SIGNAL_OPTIONS = frozenset({MpCapable, AddAddr, RemoveAddr, MpPrio, MpFail, MpFastclose,
                             MpJoinAck})


def _unwrap64(value: int, near: int, is_64: bool) -> int:
    """The internal DSN whose low 64 (or 32) bits are `value`, closest to `near`."""
    bits = 64 if is_64 else 32
    mask = (1 << bits) - 1
    delta = (value - near) & mask
    if delta >= 1 << (bits - 1):
        delta -= 1 << bits
    return near + delta


class Connection(HandshakeMixin, SignallingMixin):
    """An MPTCP connection (or the plain TCP connection it fell back to)."""

    def __init__(self, *, host: MptcpHost, is_client: bool, config: StackConfig,
                 rng: random.Random, now: float, local_address: str, local_port: int,
                 remote_address: str, remote_port: int, local_key: int) -> None:
        self.host = host
        self.is_client = is_client
        self.config = config
        self.rng = rng
        self.created_at = now
        self.local_address = local_address
        self.local_port = local_port
        self.remote_address = remote_address
        self.remote_port = remote_port
        self.counters = new_counters()
        self.mode = PENDING
        self.fallback_kind: str | None = None
        self.mp_fail_seen = False
        self.subflow_rejected = False
        self.closed_reason: str | None = None
        self.checksum = config.checksum
        self.mptcp_requested = config.mptcp_enabled
        self.local_key = local_key
        self.local_token = key_to_token(local_key)
        self.remote_key: int | None = None
        self.remote_token: int | None = None
        self.allow_infinite_fallback = True
        self.scheduler = create_scheduler(config.scheduler)
        self.path_manager = create_path_manager(config.path_manager)
        self.cc_group = CouplingGroup()
        self.subflows: list[Subflow] = []
        self.all_subflows: list[Subflow] = []  # those that may still have output
        self.history: list[Subflow] = []  # every subflow ever created, for stats()
        self._next_subflow_id = 0
        self.local_address_ids: dict[str, int] = {local_address: 0}
        self.remote_addresses: dict[int, tuple[str, int | None]] = {}
        # --- send side ---
        self._send_buf = bytearray()
        self._send_buf_offset = 0
        self.snd_data_una = 1  # re-based once keys are known
        self.snd_data_nxt = 1
        self.peer_window_right = 1 + 0xFFFF
        self.reinject: list[tuple[int, int]] = []
        self.epoch = 0
        self.infinite_map_pending = False
        self.data_fin_requested = False
        self.data_fin_dsn: int | None = None
        self.data_fin_deadline: float | None = None
        self.data_fin_backoff = 1
        self._send_blocked = False
        self.data_rtx_deadline: float | None = None
        self.data_rtx_backoff = 1
        self.last_now = now  # the latest time seen, for API calls made without one
        # --- receive side ---
        self.rcv = Reassembly(1)
        self._ack_dss: Dss | None = None
        self._recv_buf = bytearray()
        self.peer_data_fin_dsn: int | None = None
        self.peer_data_fin_received = False
        self.remote_idsn = 0
        # --- signalling ---
        self.pending_add_addr: list[AddAddr] = []
        self.pending_echo: list[AddAddr] = []
        self.pending_remove: list[int] = []
        self.announced: dict[int, tuple[AddAddr, float, int]] = {}  # id -> (opt, deadline, tries)
        self.pending_mp_fail: int | None = None
        self.established_reported = False
        self.bytes_delivered = 0

    # ================================================================== properties
    @property
    def local_addresses(self) -> list[str]:
        return list(self.host.addresses)

    @property
    def send_end(self) -> int:
        return self.snd_data_una + len(self._send_buf) - self._send_buf_offset

    def _new_subflow(self, local_address: str, local_port: int, remote_address: str,
                     remote_port: int, now: float) -> Subflow:
        cc = create_congestion_control(self.config.congestion_control, mss=self.config.mss,
                                       initial_window_segments=self.config.initial_cwnd_segments,
                                       group=self.cc_group)
        subflow = Subflow(owner=self, local_address=local_address, local_port=local_port,
                          remote_address=remote_address, remote_port=remote_port,
                          config=self.config, rng=self.rng, cc=cc, now=now,
                          subflow_id=self._next_subflow_id)
        self._next_subflow_id += 1
        subflow.rx = MappingReceiver(checksum=self.checksum)
        subflow.option_overhead = self._dss_overhead()
        self.subflows.append(subflow)
        self.all_subflows.append(subflow)
        self.history.append(subflow)
        self.host.register_subflow(subflow, self)
        return subflow

    def _dss_overhead(self) -> int:
        """Bytes of a DSS with 64-bit data ACK and 64-bit mapping (+ checksum)."""
        return 28 if self.checksum else 26

    def _local_address_id(self, address: str) -> int:
        if address not in self.local_address_ids:
            self.local_address_ids[address] = len(self.local_address_ids)
        return self.local_address_ids[address]

    # ================================================================== opening
    def _become_mptcp(self, now: float) -> None:
        assert self.remote_key is not None
        self.mode = next_mode(self.mode, "keys_exchanged")
        self.remote_token = key_to_token(self.remote_key)
        local_idsn = key_to_idsn(self.local_key)
        self.remote_idsn = key_to_idsn(self.remote_key)
        buffered = bytes(self._send_buf[self._send_buf_offset:])
        self.snd_data_una = self.snd_data_nxt = local_idsn + 1
        self._send_buf = bytearray(buffered)
        self._send_buf_offset = 0
        self.rcv = Reassembly(self.remote_idsn + 1)
        initial = self.subflows[0]
        initial.option_overhead = self._dss_overhead()  # checksum is known only now
        self.peer_window_right = self.snd_data_una + initial.snd_wnd

    def _fall_back(self, kind: str, now: float) -> None:
        """Switch to plain TCP for good (RFC 8684 3.7)."""
        if self.mode == FALLBACK:
            return
        self.mode = next_mode(self.mode, "fallback")
        if self.fallback_kind is None:
            self.fallback_kind = kind
        self.host.emit(events.FallbackOccurred(self, kind))
        for subflow in self.subflows:
            subflow.data_ready = subflow is self.subflows[0]

    # ================================================================== subflow hooks
    def _data_ack_dss(self) -> Dss:
        """The data-ACK-only DSS; options are immutable, so one serves every ACK until the
        data level moves (several ACKs per advance on a busy receiver)."""
        cached = self._ack_dss
        value = self.rcv.next & MASK64
        if cached is None or cached.data_ack != value:
            cached = self._ack_dss = Dss(data_ack=value)
        return cached

    def ack_options(self, subflow: Subflow, budget: int) -> list[TcpOption]:
        if (subflow.fully_established and self.mode == MPTCP and subflow.mptcp
                and self.data_fin_dsn is None and subflow.pending_prio is None
                and self.pending_mp_fail is None and not self.pending_echo
                and not self.pending_add_addr and not self.pending_remove):
            return [self._data_ack_dss()]  # the usual case: nothing but the data ACK
        if self.mode == PENDING or not subflow.mptcp:
            return []
        if self.mode == FALLBACK:
            if self.infinite_map_pending and subflow is self.subflows[0]:
                return [self._infinite_mapping(subflow)]
            return []
        if subflow.is_join and not subflow.fully_established and not subflow.is_passive:
            assert self.remote_key is not None
            return [MpJoinAck(join_ack_hmac(self.local_key, self.remote_key,
                                            subflow.local_nonce, subflow.remote_nonce))]
        if not subflow.is_join and self.is_client and not subflow.fully_established:
            flags = MPCAPABLE_FLAG_HMAC_SHA256 | (MPCAPABLE_FLAG_CHECKSUM if self.checksum else 0)
            return [MpCapable(version=1, flags=flags, sender_key=self.local_key,
                              receiver_key=self.remote_key)]
        options: list[TcpOption] = []
        if subflow.pending_prio is not None:
            options.append(MpPrio(backup=subflow.pending_prio))
            self.counters["MPPrioTx"] += 1
            subflow.pending_prio = None
        if self.pending_mp_fail is not None:
            options.append(MpFail(self.pending_mp_fail & MASK64))
            self.counters["MPFailTx"] += 1
            self.pending_mp_fail = None
        dss = self._data_ack_dss()
        if (self.data_fin_dsn is not None and self.data_fin_deadline is not None
                and self.snd_data_una <= self.data_fin_dsn):
            csum = dss_checksum(self.data_fin_dsn & MASK64, 0, 1, b"") if self.checksum else None
            dss = Dss(data_ack=dss.data_ack, dsn=self.data_fin_dsn & MASK64, subflow_seq=0,
                      data_len=1, checksum=csum, data_fin=True)
        options.append(dss)
        if not (self.pending_echo or self.pending_add_addr or self.pending_remove):
            return options
        used = sum(encoded_length(o) for o in options)
        signals: list[TcpOption] = []
        if self.pending_echo:
            signals.append(self.pending_echo[0])
        elif self.pending_add_addr:
            signals.append(self.pending_add_addr[0])
        if self.pending_remove:
            signals.append(RemoveAddr(tuple(self.pending_remove)))
        for signal in signals:
            size = encoded_length(signal)
            if used + size > budget:
                continue
            used += size
            options.append(signal)
            if type(signal) is AddAddr:
                if signal.echo:
                    self.pending_echo.pop(0)
                    self.counters["EchoAddTx"] += 1
                else:
                    self.pending_add_addr.pop(0)
                    self.counters["AddAddrTx"] += 1
            else:
                self.counters["RmAddrTx"] += 1
                self.pending_remove = []
        return options

    def _infinite_mapping(self, subflow: Subflow) -> Dss:
        self.infinite_map_pending = False
        self.counters["InfiniteMapTx"] += 1
        return Dss(data_ack=self.rcv.next & MASK64, dsn=self.snd_data_nxt & MASK64,
                   subflow_seq=subflow.snd_nxt & MASK32, data_len=0,
                   checksum=0 if self.checksum else None)

    def data_options(self, subflow: Subflow, segment: SentSegment,
                     budget: int) -> list[TcpOption]:
        if self.mode == FALLBACK or not subflow.mptcp or segment.dsn is None:
            if self.infinite_map_pending and subflow is self.subflows[0]:
                self.infinite_map_pending = False
                self.counters["InfiniteMapTx"] += 1
                return [Dss(data_ack=self.rcv.next & MASK64, dsn=segment.dsn & MASK64
                            if segment.dsn is not None else 0,
                            subflow_seq=segment.start & MASK32, data_len=0,
                            checksum=0 if self.checksum else None)]
            return []
        payload = segment.payload
        length = len(payload)
        csum = None
        if self.checksum:
            csum = dss_checksum(segment.dsn & MASK64, segment.start & MASK32, length, payload)
        if (not subflow.fully_established and not subflow.is_join and self.is_client
                and segment.start == 1):
            flags = MPCAPABLE_FLAG_HMAC_SHA256 | (MPCAPABLE_FLAG_CHECKSUM if self.checksum else 0)
            return [MpCapable(version=1, flags=flags, sender_key=self.local_key,
                              receiver_key=self.remote_key, data_len=length, checksum=csum)]
        return [Dss(data_ack=self.rcv.next & MASK64, dsn=segment.dsn & MASK64,
                    subflow_seq=segment.start & MASK32, data_len=length, checksum=csum)]

    def on_established(self, subflow: Subflow, now: float) -> None:
        if subflow.is_join:
            if subflow.is_passive:
                subflow.fully_established = subflow.data_ready = True
                self.allow_infinite_fallback = False
                subflow.send_ack(now)  # the fourth ACK: tells the initiator it may send
                self.host.emit(events.SubflowEstablished(self, subflow))
            else:
                subflow.rto_deadline = now + subflow.rtt.rto  # third-ACK retransmission
            return
        # the initial subflow
        subflow.data_ready = True
        if subflow.mptcp and self.remote_key is not None:
            self._become_mptcp(now)
            subflow.fully_established = subflow.is_passive
        else:
            self._become_plain(subflow, now)
        if not self.established_reported:
            self.established_reported = True
            if not self.is_client:
                self.host.emit(events.ConnectionAccepted(self))
            self.host.emit(events.ConnectionEstablished(self))
        if self.mode == MPTCP and subflow.fully_established:
            self.path_manager.on_established(self, now)  # server: keys known both ways

    def _become_plain(self, subflow: Subflow, now: float) -> None:
        subflow.mptcp = False
        subflow.option_overhead = 0
        subflow.fully_established = subflow.data_ready = True
        subflow.rx = MappingReceiver(checksum=False)
        subflow.rx.set_infinite(1, self.rcv.next)
        self.peer_window_right = 1 << 62
        if self.config.mptcp_enabled:
            self._fall_back("fallback-syn", now)
        else:
            self.mode = next_mode(self.mode, "fallback")  # plain TCP by configuration

    def receive_window(self, subflow: Subflow) -> int:
        return max(0, self.config.recv_buffer - len(self._recv_buf) - self.rcv.buffered)

    def on_segment_options(self, subflow: Subflow, segment: TcpSegment, offset: int,
                           now: float) -> None:
        subflow.segment_had_data_ack = subflow.segment_had_mptcp_option = False
        if not subflow.mptcp or self.mode == PENDING:
            return
        if subflow.is_join and not subflow.fully_established and not subflow.is_passive:
            subflow.fully_established = subflow.data_ready = True  # the fourth ACK
            self.allow_infinite_fallback = False
            if subflow.snd_nxt == subflow.snd_una:
                subflow.rto_deadline = None
            self.host.emit(events.SubflowEstablished(self, subflow))
        for option in segment.options:
            kind = type(option)
            if kind is Dss:
                subflow.segment_had_mptcp_option = True
                self._on_dss(subflow, option, segment, offset, now)  # type: ignore[arg-type]
                continue
            if kind not in _SIGNAL_OPTIONS:
                continue  # TCP's own options (timestamps, SACK): skip the chain below
            subflow.segment_had_mptcp_option = True
            if kind is MpCapable:
                self._on_mp_capable_data(subflow, option, segment, now)  # type: ignore[arg-type]
            elif kind is AddAddr:
                self._on_add_addr(subflow, option, now)  # type: ignore[arg-type]
            elif kind is RemoveAddr:
                self._on_remove_addr(option, now)  # type: ignore[arg-type]
            elif kind is MpPrio:
                self.counters["MPPrioRx"] += 1
                subflow.backup_remote = option.backup  # type: ignore[union-attr]
            elif kind is MpFail:
                self._on_mp_fail(subflow, option, now)  # type: ignore[arg-type]
            elif kind is MpFastclose:
                self._on_fastclose(option, now)  # type: ignore[arg-type]
                return
            elif kind is MpJoinAck and subflow.is_passive:
                subflow.ack_pending = True  # a resent third ACK: the fourth was lost

    def _on_dss(self, subflow: Subflow, dss: Dss, segment: TcpSegment, offset: int,
                now: float) -> None:
        subflow.dss_seen = True
        if not subflow.fully_established and not subflow.is_join:
            subflow.fully_established = True  # MP_CAPABLE client: the server sent a DSS
            if self.mode == MPTCP:
                # like Linux, the client's path manager starts once fully established
                self.path_manager.on_established(self, now)
        if dss.data_ack is not None and self.mode == MPTCP:
            subflow.data_ack_seen = subflow.segment_had_data_ack = True
            ack = _unwrap64(dss.data_ack, self.snd_data_una, dss.data_ack_64)
            if ack > self.snd_data_una:
                self._on_data_ack(ack, now)
            right = ack + (segment.window << subflow.peer_window_shift)
            if right > self.peer_window_right:
                self.peer_window_right = right
        if dss.data_len is None or dss.dsn is None:
            return
        dsn = _unwrap64(dss.dsn, self.rcv.next, dss.dsn_64)
        if dss.data_len == 0:
            self._on_infinite_mapping(subflow, dsn, dss, offset, now)
            return
        if self.mode != MPTCP:
            return
        if dss.data_fin and dss.subflow_seq == 0 and dss.data_len == 1:
            self._on_data_fin(dsn, now, subflow)
            return
        assert dss.subflow_seq is not None
        start = unwrap_relative(dss.subflow_seq, offset)
        length = dss.data_len - (1 if dss.data_fin else 0)
        rx = subflow.rx
        assert rx is not None
        if not rx.add(start, length, dsn, dss.data_len, dss.checksum, dss.data_fin):
            self.counters["DSSNotMatching"] += 1
        elif rx.pending:
            self._deliver(subflow, rx.process(), now)

    def _on_mp_capable_data(self, subflow: Subflow, capable: MpCapable, segment: TcpSegment,
                            now: float) -> None:
        """MP_CAPABLE with data-level length: the implicit first mapping (DSN = IDSN + 1)."""
        if subflow.is_join or self.is_client or capable.data_len is None:
            return
        if self.remote_key is None and capable.sender_key is not None:
            self.remote_key = capable.sender_key
        rx = subflow.rx
        assert rx is not None
        rx.add(1, capable.data_len, self.remote_idsn + 1, capable.data_len, capable.checksum,
               False)

    def _on_infinite_mapping(self, subflow: Subflow, dsn: int, dss: Dss, offset: int,
                             now: float) -> None:
        self.counters["InfiniteMapRx"] += 1
        rx = subflow.rx
        assert rx is not None and dss.subflow_seq is not None
        if rx.infinite_base is None:
            rx.set_infinite(unwrap_relative(dss.subflow_seq, offset), dsn)
        kind = "mp-fail" if self.mp_fail_seen else "fallback-infinite-map"
        self._fall_back(kind, now)
        self._deliver(subflow, rx.process(), now)

    def on_subflow_data(self, subflow: Subflow, offset: int, data: bytes, now: float) -> None:
        rx = subflow.rx
        assert rx is not None
        self._deliver(subflow, rx.feed(offset, data), now)

    def _deliver(self, subflow: Subflow, outcome: MappingOutcome, now: float) -> None:
        for dsn, data in outcome.delivered:
            self._receive_data(dsn, data, now)
        if outcome.data_fin_dsn is not None:
            self._on_data_fin(outcome.data_fin_dsn, now, subflow)
        if outcome.checksum_failed is not None:
            self._on_checksum_failure(subflow, outcome.checksum_failed.dsn, now)
        elif outcome.unmapped:
            self._on_unmapped_data(subflow, now)

    def _receive_data(self, dsn: int, data: bytes, now: float) -> None:
        rcv = self.rcv
        if dsn + len(data) <= rcv.next:
            self.counters["DuplicateData"] += 1
            return
        if dsn > rcv.next:
            self.counters["OFOQueue"] += 1
        in_order = rcv.add(dsn, data)
        if in_order:
            was_empty = not self._recv_buf
            self._recv_buf += in_order
            self.bytes_delivered += len(in_order)
            if was_empty:  # edge-triggered: the connection became readable
                self.host.emit(events.DataReceived(self, len(in_order)))
        if self.peer_data_fin_dsn is not None and rcv.next == self.peer_data_fin_dsn:
            self._on_data_fin(self.peer_data_fin_dsn, now)

    def _on_data_fin(self, dsn: int, now: float, subflow: Subflow | None = None) -> None:
        if self.peer_data_fin_received:
            if subflow is not None and not subflow.is_closed:
                subflow.send_ack(now)  # a resent DATA_FIN: our data ACK was lost; answer here
            return
        if dsn != self.rcv.next:
            if dsn > self.rcv.next:
                self.peer_data_fin_dsn = dsn
            return
        self.rcv.next += 1
        self.peer_data_fin_received = True
        self.peer_data_fin_dsn = None
        self.host.emit(events.DataEndReceived(self))
        # acknowledge the DATA_FIN at data level now, on every subflow: one of them may
        # be on a dead path, and a pure ACK is never retransmitted
        for other in self.subflows:
            if not other.is_closed and other.data_ready:
                other.send_ack(now)
        self._maybe_finish(now)

    def _refuse_fallback_once_joined(self, subflow: Subflow, what: str) -> None:
        """No infinite-mapping fallback once joins exist (RFC 8684 3.7): reset this subflow
        only, as Linux does; the peer reinjects its data on the others."""
        if subflow.is_join or not self.allow_infinite_fallback:
            self.counters["SubflowResetMiddlebox"] += 1
            self.subflow_rejected = True
            raise RemoteProtocolError(f"{what} on a join subflow" if subflow.is_join
                                      else f"{what} after joins",
                                      reason=MPTCPRST_MIDDLEBOX_INTERFERENCE)

    def _on_unmapped_data(self, subflow: Subflow, now: float) -> None:
        """Payload without a DSS mapping: a middlebox strips options from data."""
        rx = subflow.rx
        assert rx is not None
        self._refuse_fallback_once_joined(subflow, "data without DSS mapping")
        self.counters["DSSNoMatchTCP"] += 1
        self.counters["DssFallback"] += 1
        rx.set_infinite(rx.pending_offset, self.rcv.next)
        self._fall_back("fallback-infinite-map", now)
        self._deliver(subflow, rx.process(), now)

    def _on_checksum_failure(self, subflow: Subflow, dsn: int, now: float) -> None:
        self.counters["DataCsumErr"] += 1
        self.mp_fail_seen = True
        alive = [s for s in self.subflows if not s.is_closed]
        if len(alive) > 1:
            # several subflows: reset this one with MP_FAIL; the peer reinjects elsewhere
            self.counters["MPFailTx"] += 1
            self.counters["MPRstTx"] += 1
            subflow.reset(now, [MpFail(dsn & MASK64), MpTcpRst(MPTCPRST_MPTCP_ERROR)])
            return
        self.pending_mp_fail = dsn
        subflow.send_ack(now)

    def _on_mp_fail(self, subflow: Subflow, option: MpFail, now: float) -> None:
        self.counters["MPFailRx"] += 1
        self.mp_fail_seen = True
        alive = [s for s in self.subflows if not s.is_closed]
        if len(alive) > 1 or self.mode != MPTCP:
            return  # the peer resets that subflow; reinjection follows
        failed = _unwrap64(option.dsn, self.snd_data_una, True)
        failed = max(failed, self.snd_data_una)
        self.epoch += 1
        self.snd_data_nxt = min(failed, self.send_end)
        self.reinject = []
        self.infinite_map_pending = True
        self._fall_back("mp-fail", now)
        if self.snd_data_nxt == self.send_end:
            subflow.send_ack(now)  # nothing to send: carry the infinite mapping on an ACK

    def on_subflow_acked(self, subflow: Subflow, segments: list[SentSegment],
                         now: float) -> None:
        if self.mode == FALLBACK:
            best = self.snd_data_una
            for segment in segments:
                if segment.dsn is not None and segment.epoch == self.epoch:
                    best = max(best, segment.dsn + len(segment.payload))
            if best > self.snd_data_una:
                self._on_data_ack(min(best, self.send_end), now)
            if subflow.fin_offset is not None:
                self._maybe_finish(now)
            return
        if subflow.stale:
            subflow.stale = False  # the path works again
            self.counters["SubflowRecover"] += 1
        if self.mode != MPTCP or not subflow.mptcp:
            return
        # remember what the subflow delivered but the peer has not acknowledged at data
        # level yet: if the subflow dies, those bytes must go again on another one
        unconfirmed = subflow.acked_unconfirmed
        una = self.snd_data_una  # the data ACK on this segment was processed already
        for segment in segments:
            dsn = segment.dsn
            if dsn is not None and dsn + len(segment.payload) > una and segment.payload:
                unconfirmed.append((dsn, len(segment.payload)))
        while unconfirmed and unconfirmed[0][0] + unconfirmed[0][1] <= una:
            unconfirmed.popleft()
        if (subflow.segment_had_data_ack or subflow.segment_had_mptcp_option
                or not any(s.payload for s in segments)):
            return
        # data acknowledged at subflow level by a segment without any MPTCP option: DSS options
        # are stripped (or the peer fell back after finding our data unmapped). A segment with
        # another MPTCP option proves they pass: Linux sends ADD_ADDR (and its echo) on a pure
        # ACK that carries no DSS, and that ACK may well acknowledge new data.
        self._refuse_fallback_once_joined(subflow, "data ACKed without DSS")
        # named as Linux counts it: before the client is fully established (no DSS from the
        # server yet) MPCapableDataFallback, afterwards DssFallback (a missing DSS)
        self.counters["DssFallback" if subflow.fully_established else "MPCapableDataFallback"] += 1
        self.infinite_map_pending = True
        self._fall_back("fallback-infinite-map", now)
        self.on_subflow_acked(subflow, segments, now)

    def _on_data_ack(self, ack: int, now: float) -> None:
        if ack <= self.snd_data_una:
            return
        end = self.send_end + (1 if self.data_fin_dsn is not None else 0)
        if ack > end:
            return
        freed = min(ack, self.send_end) - self.snd_data_una
        self._send_buf_offset += freed
        if self._send_buf_offset > 1 << 20 or self._send_buf_offset == len(self._send_buf):
            del self._send_buf[:self._send_buf_offset]
            self._send_buf_offset = 0
        self.snd_data_una = ack
        if self.snd_data_nxt < ack:
            self.snd_data_nxt = ack
        self.data_rtx_deadline = None
        self.data_rtx_backoff = 1
        if self._send_blocked and freed:
            self._send_blocked = False
            self.host.emit(events.SendBufferAvailable(self, self.send_buffer_free()))
        if self.data_fin_dsn is not None and ack > self.data_fin_dsn:
            self.data_fin_deadline = None
            self._maybe_finish(now)

    def on_fin(self, subflow: Subflow, now: float) -> None:
        if self.mode == FALLBACK and subflow is self.subflows[0]:
            if not self.peer_data_fin_received:
                self.peer_data_fin_received = True
                self.host.emit(events.DataEndReceived(self))
            self._maybe_finish(now)
            return
        subflow.close(now)  # MPTCP: the peer closed this subflow; close our half too

    def on_rst(self, subflow: Subflow, segment: TcpSegment, now: float) -> None:
        if subflow.is_join and not subflow.data_ready:
            self.subflow_rejected = True  # the peer refused the join
        for option in segment.options:
            if type(option) is MpTcpRst:
                self.counters["MPRstRx"] += 1
                if option.reason == MPTCPRST_MIDDLEBOX_INTERFERENCE:
                    self.subflow_rejected = True  # a join, or the initial subflow after joins
            elif type(option) is MpFastclose:
                if option.receiver_key == self.local_key:
                    self.counters["MPFastcloseRx"] += 1
                    self._close_connection("fastclose", now, send_rst=False)
                else:
                    self.counters["MPFastcloseRxIgnored"] += 1
            elif type(option) is MpFail:
                self.counters["MPFailRx"] += 1
                self.mp_fail_seen = True

    def on_closed(self, subflow: Subflow, reason: str, now: float) -> None:
        if subflow in self.subflows:
            self.subflows.remove(subflow)
        self.host.unregister_subflow(subflow)
        self.host.emit(events.SubflowClosed(self, subflow, reason))
        if self.closed_reason is not None:
            return
        if self.mode == MPTCP:
            ranges = list(subflow.acked_unconfirmed)
            ranges += [(s.dsn, len(s.payload)) for s in subflow.scoreboard.unacked()
                       if s.dsn is not None and s.payload]
            for dsn, length in ranges:
                if dsn + length > self.snd_data_una:
                    self.reinject.append((dsn, length))
            alive = [s for s in self.subflows if not s.is_closed]
            if alive:
                return
        finished = (self.peer_data_fin_received
                    and (self.data_fin_dsn is None or self.snd_data_una > self.data_fin_dsn
                         or self.mode == FALLBACK))
        if subflow.is_join and self.mode == MPTCP and reason != "closed":
            return
        self._close_connection("closed" if finished or reason == "closed" else reason, now,
                               send_rst=False)

    # ================================================================== closing
    def _maybe_finish(self, now: float) -> None:
        """Close the subflows once both directions are finished (DATA_FINs acknowledged;
        after fallback: our FIN sent after all data, and both FINs exchanged)."""
        if self.closed_reason is not None:
            return
        if self.mode == FALLBACK:
            subflow = self.subflows[0] if self.subflows else None
            if subflow is None:
                return
            if (self.data_fin_requested and self.snd_data_nxt == self.send_end
                    and subflow.fin_offset is None):
                subflow.close(now)
            if subflow.state in (TcpState.TIME_WAIT, TcpState.CLOSED):
                self._close_connection("closed", now, send_rst=False)
            return
        ours_done = self.data_fin_dsn is not None and self.snd_data_una > self.data_fin_dsn
        if ours_done and self.peer_data_fin_received:
            self._close_connection("closed", now, send_rst=False)
            for subflow in list(self.subflows):
                subflow.close(now)

    def _close_connection(self, reason: str, now: float, *, send_rst: bool) -> None:
        if self.closed_reason is not None:
            return
        self.closed_reason = reason
        for subflow in list(self.subflows):
            if send_rst or (not subflow.is_closed and reason != "closed"):
                subflow.reset(now, reason=reason)
        self.host.emit(events.ConnectionClosed(self, reason))
        self.host.connection_closed(self)

    # ================================================================== application API
    def send_buffer_free(self) -> int:
        return max(0, self.config.send_buffer - (len(self._send_buf) - self._send_buf_offset))

    def send(self, data: bytes) -> int:
        """Queue data; returns how many bytes fit in the send buffer (the rest is the
        caller's to retry after a SendBufferAvailable event)."""
        if self.data_fin_requested or self.closed_reason is not None:
            raise LocalProtocolError("send() after close() or on a closed connection")
        accepted = min(len(data), self.send_buffer_free())
        if accepted < len(data):
            self._send_blocked = True
        if accepted:
            self._send_buf += data[:accepted]
        return accepted

    def receive(self, max_bytes: int = -1) -> bytes:
        """Take up to max_bytes (all when negative) of in-order received data."""
        buf = self._recv_buf
        if max_bytes < 0 or max_bytes >= len(buf):
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:max_bytes])
            del buf[:max_bytes]
        if data:
            self._window_update()
        return data

    def _window_update(self) -> None:
        """Tell the peer the window opened (as Linux does after reads free space)."""
        window = self.config.recv_buffer - len(self._recv_buf) - self.rcv.buffered
        for subflow in self.subflows:
            if subflow.state is TcpState.ESTABLISHED and subflow.data_ready:
                if (subflow.last_window_advertised < subflow.mss * 2
                        and window >= subflow.mss * 2) or (
                        window >= 2 * subflow.last_window_advertised + subflow.mss):
                    subflow.ack_pending = True
                return

    def close(self) -> None:
        """Close our sending direction: DATA_FIN after all queued data (FIN after fallback)."""
        if self.closed_reason is not None:
            raise LocalProtocolError("close() on a closed connection")
        self.data_fin_requested = True

    # ================================================================== host-facing
    def receive_segment(self, subflow: Subflow, packet: Packet, now: float) -> None:
        """The one catch site for RemoteProtocolError."""
        self.last_now = now
        try:
            subflow.receive(packet.tcp, now)
        except RemoteProtocolError as error:
            self.counters["MPRstTx"] += 1
            # an error on the initial subflow poisons the connection only when nothing else
            # carries it (Linux resets just that subflow once joins exist)
            alone = not any(s is not subflow and not s.is_closed for s in self.subflows)
            if error.whole_connection or (not subflow.is_join and alone):
                self.closed_reason = None
                for other in list(self.subflows):
                    other.reset(now, [MpTcpRst(error.reason)], reason="reset")
                self._close_connection("reset", now, send_rst=False)
            else:
                subflow.reset(now, [MpTcpRst(error.reason)], reason="rejected")

    def flush(self, now: float) -> None:
        """Schedule queued data onto subflows and send any due DATA_FIN."""
        self.last_now = now
        if self.closed_reason is not None or self.mode == PENDING:
            return
        if self.mode == FALLBACK:
            self._flush_fallback(now)
            return
        self._flush_mptcp(now)
        self._arm_data_retransmission(now)
        if (self.data_fin_requested and self.data_fin_dsn is None
                and self.snd_data_nxt == self.send_end and not self.reinject):
            self.data_fin_dsn = self.send_end
            self._send_data_fin(now)

    def _send_data_fin(self, now: float) -> None:
        """DATA_FIN on every usable subflow (as Linux's mptcp_send_ack): a pure ACK is never
        retransmitted by TCP, so one sent on a dead path would be lost until our timer."""
        usable = eligible_subflows(self.subflows)
        if not usable:
            return
        self.data_fin_deadline = now + min(s.rtt.rto for s in usable) * self.data_fin_backoff
        for subflow in usable:
            subflow.send_ack(now)

    def _flush_fallback(self, now: float) -> None:
        if not self.subflows:
            return
        subflow = self.subflows[0]
        while self.snd_data_nxt < self.send_end:
            room = subflow.send_space()
            if room <= 0:
                if subflow.window_limited() and subflow.snd_nxt == subflow.snd_una:
                    subflow.arm_probe(now)
                break
            size = min(subflow.mss, room, self.send_end - self.snd_data_nxt)
            start = self.snd_data_nxt - self.snd_data_una + self._send_buf_offset
            subflow.send_data(bytes(self._send_buf[start:start + size]), self.snd_data_nxt,
                              now, epoch=self.epoch)
            self.snd_data_nxt += size
        if self.infinite_map_pending and self.snd_data_nxt == self.send_end:
            subflow.send_ack(now)
        if self.data_fin_requested and self.snd_data_nxt == self.send_end:
            self._maybe_finish(now)

    def _flush_mptcp(self, now: float) -> None:
        if not self.reinject and self.snd_data_nxt >= self.send_end:
            return
        eligible = eligible_subflows(self.subflows)
        if not eligible:
            return
        scheduler = self.scheduler
        # nothing below changes the send buffer, snd_data_una or a subflow's MSS: read once
        una = self.snd_data_una
        send_end = self.send_end
        buf = self._send_buf
        buf_base = self._send_buf_offset - una
        epoch = self.epoch
        single = eligible[0] if len(eligible) == 1 else None
        sticky: Subflow | None = None
        sticky_chosen: list[Subflow] = []
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
                if all(s.snd_nxt == s.snd_una for s in eligible):
                    eligible[0].arm_probe(now)
                return
            if single is not None:
                space = single.send_space()
                if space <= 0:
                    if single.snd_nxt == single.snd_una and single.window_limited():
                        single.arm_probe(now)
                    return
                chosen = eligible
                size = min(available, single.mss, space)
            elif sticky is not None and (space := sticky.send_space()) > 0:
                chosen = sticky_chosen  # the choice cannot change until its room is used up
                size = min(available, sticky_mss, space)
            else:
                ready = [s for s in eligible if s.send_space() > 0]
                if not ready:
                    if all(s.snd_nxt == s.snd_una and s.window_limited() for s in eligible):
                        eligible[0].arm_probe(now)
                    return
                chosen = scheduler.select(ready)
                if scheduler.sticky and len(chosen) == 1:
                    sticky, sticky_chosen, sticky_mss = chosen[0], chosen, chosen[0].mss
                else:
                    sticky = None
                size = available
                for subflow in chosen:
                    size = min(size, subflow.mss, subflow.send_space())
            if not reinjecting and window < size:
                size = window
            start = dsn + buf_base
            payload = bytes(buf[start:start + size])
            for subflow in chosen:
                subflow.send_data(payload, dsn, now, epoch=epoch)
            if reinjecting:
                self.counters["Reinjected"] += 1
                rest = length - size
                if rest > 0:
                    self.reinject[0] = (dsn + size, rest)
                else:
                    self.reinject.pop(0)
            else:
                self.snd_data_nxt = dsn + size

    def _arm_data_retransmission(self, now: float) -> None:
        """MPTCP-level retransmission (as Linux's msk timer): data that every subflow has
        delivered but the peer never acknowledged at data level goes again."""
        if (self.data_rtx_deadline is not None or self.snd_data_una >= self.snd_data_nxt
                or self.reinject):
            return
        if any(s.snd_nxt != s.snd_una for s in self.subflows):
            return
        usable = eligible_subflows(self.subflows)
        if usable:
            rto = max(s.rtt.rto for s in usable)
            self.data_rtx_deadline = now + rto * self.data_rtx_backoff

    def _on_subflow_timeout(self, subflow: Subflow) -> None:
        """A subflow's RTO fired without progress: mark it stale and send what it carries
        that the peer has not acknowledged at data level again on the others (RFC 8684
        3.3.6; Linux marks the subflow stale and re-sends pending data on active subflows).
        Only when another active subflow exists: alone, the subflow's own RTO is all there is.
        The peer drops whichever copy arrives second."""
        if self.mode != MPTCP or subflow.stale:
            return
        # any other working subflow counts, backups included: eligible_subflows() would
        # hide a backup behind this very (regular, not yet stale) subflow
        if not any(s is not subflow and not s.stale and s.data_ready and s.fin_offset is None
                   and not s.is_closed and s.close_reason is None for s in self.subflows):
            return
        subflow.stale = True
        self.counters["SubflowStale"] += 1
        una = self.snd_data_una
        ranges: list[tuple[int, int]] = []
        for segment in subflow.scoreboard.unacked():
            dsn = segment.dsn
            if dsn is None or not segment.payload or dsn + len(segment.payload) <= una:
                continue
            if ranges and ranges[-1][0] + ranges[-1][1] == dsn:
                ranges[-1] = (ranges[-1][0], ranges[-1][1] + len(segment.payload))
            else:
                ranges.append((dsn, len(segment.payload)))
        self.reinject.extend(ranges)

    def next_deadline(self) -> float | None:
        best = None
        for subflow in self.subflows:
            deadline = subflow.next_deadline()
            if deadline is not None and (best is None or deadline < best):
                best = deadline
        for deadline in (self.data_fin_deadline, self._add_addr_deadline(),
                         self.data_rtx_deadline):
            if deadline is not None and (best is None or deadline < best):
                best = deadline
        return best

    def handle_timer(self, now: float) -> None:
        for subflow in list(self.subflows):
            deadline = subflow.next_deadline()
            if deadline is not None and deadline <= now:
                timeouts = subflow.retransmit_count
                try:
                    subflow.handle_timer(now)
                except RemoteProtocolError as error:  # pragma: no cover - defensive
                    subflow.reset(now, [MpTcpRst(error.reason)])
                if (subflow.retransmit_count > timeouts and not subflow.is_closed
                        and subflow.retransmit_count >= self.config.stale_loss_count):
                    self._on_subflow_timeout(subflow)
        if self.data_fin_deadline is not None and now >= self.data_fin_deadline:
            self.data_fin_deadline = None
            self.data_fin_backoff = min(self.data_fin_backoff * 2, 64)
            self._send_data_fin(now)
            if self.data_fin_deadline is None:  # no usable subflow right now: try later
                self.data_fin_deadline = now + self.config.initial_rto * self.data_fin_backoff
        if self.data_rtx_deadline is not None and now >= self.data_rtx_deadline:
            self.data_rtx_deadline = None
            self.data_rtx_backoff = min(self.data_rtx_backoff * 2, 64)
            if self.mode == MPTCP and self.snd_data_una < self.snd_data_nxt:
                self.reinject.append((self.snd_data_una, self.snd_data_nxt - self.snd_data_una))
        self._signal_timers(now)

    def take_output(self) -> list[Packet]:
        out: list[Packet] = []
        for subflow in self.all_subflows:
            if subflow.outbox:
                out.extend(subflow.take_output())
        if len(self.all_subflows) != len(self.subflows):
            self.all_subflows = [s for s in self.all_subflows if not s.is_closed or s.outbox]
        return out

    def flush_acks(self, now: float) -> None:
        for subflow in self.subflows:
            if subflow.ack_pending:
                subflow.send_ack(now)

    # ================================================================== reporting
    def outcome(self) -> str:
        if self.closed_reason in ("reset", "fastclose"):
            return "reset"
        if self.closed_reason == "timeout":
            return "stalled"
        if self.mp_fail_seen:
            return "mp-fail"
        if self.fallback_kind is not None:
            return self.fallback_kind
        if self.mode == FALLBACK:
            return "fallback-syn"
        if self.subflow_rejected:
            return "subflow-rejected"
        if self.mode == PENDING:
            return "stalled"
        return "mptcp"

    def stats(self) -> dict:
        return {
            "outcome": self.outcome(),
            "mode": self.mode,
            "checksum": self.checksum,
            "closed_reason": self.closed_reason,
            "bytes_delivered": self.bytes_delivered,
            "subflows": [
                {"id": s.subflow_id, "local": f"{s.local_address}:{s.local_port}",
                 "remote": f"{s.remote_address}:{s.remote_port}",
                 "bytes_sent": s.bytes_sent, "bytes_received": s.bytes_received,
                 "backup": s.backup, "state": s.state.value, "join": s.is_join,
                 "srtt": s.rtt.srtt, "cwnd": s.cc.cwnd,
                 "close_reason": s.close_reason}
                for s in self._known_subflows()],
            "counters": dict(self.counters),
        }

    def _known_subflows(self) -> list[Subflow]:
        return self.history
