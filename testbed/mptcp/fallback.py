"""Failure and fallback (RFC 8684 3.7): the connection's mode (MPTCP, or plain TCP after
fallback), MP_FAIL, the infinite mapping, DSS options stripped from data or from ACKs.

Modes as a table (h11 style): "pending" (handshake), "mptcp", "fallback" (plain TCP on one
subflow; never left). A missing entry is an error naming mode and event. `Fallback` owns the
mode, how the connection fell back or failed (the outcome a report shows) and the failure
signals still to send (MP_FAIL, the infinite mapping), and decides what a failure means. It
acts on the rest of the connection only through `FallbackEffects`.
"""

from __future__ import annotations

from typing import Protocol

from testbed.mptcp.data_transfer import MASK64, DataTransfer
from testbed.mptcp.errors import LocalProtocolError, RemoteProtocolError
from testbed.mptcp.mapping import Mapping, MappingOutcome, MappingReceiver, unwrap_relative
from testbed.mptcp.subflow_context import SubflowContext
from testbed.wire.types import (
    MPTCPRST_MIDDLEBOX_INTERFERENCE,
    MPTCPRST_MPTCP_ERROR,
    Dss,
    MpFail,
    MpFastclose,
    MpTcpRst,
    TcpOption,
    TcpSegment,
)

PENDING, MPTCP, FALLBACK = "pending", "mptcp", "fallback"
# ACKs that carry our MP_FAIL until the peer answers it (its MP_FAIL or infinite mapping): a
# pure ACK is never retransmitted, and Linux, losing it, resets the subflow after a timeout
MP_FAIL_SENDS = 3

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


class FallbackEffects(Protocol):
    """What failure handling asks of its connection (connection.Connection)."""

    def report_fallback(self, kind: str) -> None: ...

    def deliver(self, context: SubflowContext, outcome: MappingOutcome, now: float) -> None: ...

    def reset_subflow(self, context: SubflowContext, now: float,
                      rst_options: list[TcpOption] | None = None,
                      reason: str = "reset") -> None: ...


class Fallback:
    """Mode, how it fell back, failure signals pending, and the handling of failures."""

    def __init__(self, *, counters: dict[str, int], data: DataTransfer,
                 live_subflows: list[SubflowContext], effects: FallbackEffects) -> None:
        self.counters = counters
        self.data = data
        self.live_subflows = live_subflows
        self.effects = effects
        self.mode = PENDING
        self.fallback_kind: str | None = None  # fallback-syn, fallback-infinite-map, mp-fail
        self.mp_fail_seen = False
        self.subflow_rejected = False  # a join was refused, stripped or reset
        # infinite-mapping fallback is allowed only until a join subflow exists
        self.allow_infinite_fallback = True
        self.infinite_map_pending = False  # send the infinite mapping on the next segment
        # (subflow offset, DSN) the infinite mapping starts at, retroactively (after MP_FAIL);
        # None: the segment that carries it
        self.infinite_map_base: tuple[int, int] | None = None
        self.pending_mp_fail: int | None = None  # DSN to report in an MP_FAIL
        self.mp_fail_sends_left = 0

    def keys_exchanged(self) -> None:
        self.mode = next_mode(self.mode, "keys_exchanged")

    def fall_back(self, kind: str) -> None:
        """Switch to plain TCP for good, on the first live subflow only."""
        if self.mode == FALLBACK:
            return
        self.mode = next_mode(self.mode, "fallback")
        if self.fallback_kind is None:
            self.fallback_kind = kind
        self.effects.report_fallback(kind)
        for context in self.live_subflows:
            context.data_ready = context is self.live_subflows[0]

    def plain_tcp(self, context: SubflowContext, mptcp_enabled: bool) -> None:
        """The initial subflow opened without MPTCP: every byte maps linearly from now."""
        context.mptcp_negotiated = False
        context.tcp.reserved_option_bytes = 0
        context.fully_established = context.data_ready = True
        context.mapping_receiver = MappingReceiver(checksum=False)
        context.mapping_receiver.set_infinite(1, self.data.data_reassembly.next)
        self.data.peer_window_right = 1 << 62
        if mptcp_enabled:
            self.fall_back("fallback-syn")
        else:
            self.mode = next_mode(self.mode, "fallback")  # plain TCP by configuration

    def refuse_once_joined(self, context: SubflowContext, what: str) -> None:
        """No infinite-mapping fallback once joins exist (RFC 8684 3.7): reset this subflow
        only, as Linux does; the peer reinjects its data on the others."""
        if context.is_join or not self.allow_infinite_fallback:
            self.counters["SubflowResetMiddlebox"] += 1
            raise RemoteProtocolError(f"{what} on a join subflow" if context.is_join
                                      else f"{what} after joins",
                                      reason=MPTCPRST_MIDDLEBOX_INTERFERENCE,
                                      subflow_rejected=True)

    def on_unmapped_data(self, context: SubflowContext, now: float) -> None:
        """Payload without a DSS mapping: a middlebox strips options from data."""
        receiver = context.mapping_receiver
        self.refuse_once_joined(context, "data without DSS mapping")
        self.counters["DSSNoMatchTCP"] += 1
        self.counters["DssFallback"] += 1
        receiver.set_infinite(receiver.pending_offset, self.data.data_reassembly.next)
        self.fall_back("fallback-infinite-map")
        self.effects.deliver(context, receiver.process(), now)

    def on_data_acked_without_dss(self, context: SubflowContext) -> None:
        """Data acknowledged at subflow level by a segment without any MPTCP option: DSS
        options are stripped (or the peer fell back after finding our data unmapped)."""
        self.refuse_once_joined(context, "data ACKed without DSS")
        # named as Linux counts it: before the client is fully established (no DSS from the
        # server yet) MPCapableDataFallback, afterwards DssFallback (a missing DSS)
        self.counters["DssFallback" if context.fully_established
                      else "MPCapableDataFallback"] += 1
        self.infinite_map_pending = True
        self.fall_back("fallback-infinite-map")

    def take_mp_fail(self) -> MpFail | None:
        """The MP_FAIL an ACK carries now, if any (counted per option sent, as Linux does)."""
        if self.pending_mp_fail is None:
            return None
        option = MpFail(self.pending_mp_fail & MASK64)
        self.counters["MPFailTx"] += 1
        self.mp_fail_sends_left -= 1
        if self.mp_fail_sends_left <= 0:
            self.pending_mp_fail = None
        return option

    def on_infinite_mapping(self, context: SubflowContext, dsn: int, dss: Dss, offset: int,
                            now: float) -> None:
        self.counters["InfiniteMapRx"] += 1
        self.pending_mp_fail = None  # the answer to our MP_FAIL, if we sent one
        receiver = context.mapping_receiver
        assert dss.subflow_seq is not None
        if receiver.infinite_base is None:
            # Linux sends its infinite mapping with subflow sequence 0 (and checksum 0): the
            # DSN then belongs to the segment that carries it, not to subflow offset 0
            start = offset if dss.subflow_seq == 0 else unwrap_relative(dss.subflow_seq, offset)
            receiver.set_infinite(start, dsn)
        self.fall_back("mp-fail" if self.mp_fail_seen else "fallback-infinite-map")
        self.effects.deliver(context, receiver.process(), now)

    def missing_checksum(self) -> RemoteProtocolError:
        """A mapping without the negotiated checksum: RFC 8684 3.3.1 says the receiver MUST
        close the subflow with a RST (Linux resets a join, falls back on the first subflow)."""
        self.counters["DSSNoChecksum"] += 1
        return RemoteProtocolError("DSS mapping without the negotiated checksum",
                                   reason=MPTCPRST_MPTCP_ERROR)

    def on_checksum_failure(self, context: SubflowContext, failed: Mapping, now: float) -> None:
        """A mapping's DSS checksum did not match its bytes (RFC 8684 3.7)."""
        self.counters["DataCsumErr"] += 1
        self.mp_fail_seen = True
        alive = [c for c in self.live_subflows if not c.tcp.is_closed]
        if len(alive) > 1 or not self.allow_infinite_fallback or self.mode != MPTCP:
            # several subflows (or joins have existed): reset this one with MP_FAIL, the
            # failed mapping discarded; the peer sends its data again on the others
            self.counters["MPFailTx"] += 1
            self.counters["MPRstTx"] += 1
            self.effects.reset_subflow(context, now, [MpFail(failed.dsn & MASK64),
                                                      MpTcpRst(MPTCPRST_MPTCP_ERROR)], "reset")
            return
        # the only subflow: MP_FAIL on its ACKs, and from the failed mapping on its bytes
        # are the data stream, as plain TCP delivers them (the middlebox's edit included;
        # Linux marks the data available the same way after mptcp_subflow_fail). The peer's
        # infinite mapping, when it comes, maps the same bytes to the same DSNs.
        self.pending_mp_fail = failed.dsn
        self.mp_fail_sends_left = MP_FAIL_SENDS
        receiver = context.mapping_receiver
        receiver.set_infinite(failed.start, failed.dsn)
        self.fall_back("mp-fail")
        self.effects.deliver(context, receiver.process(), now)
        context.tcp.send_ack(now, context)

    def on_rst(self, context: SubflowContext, segment: TcpSegment, local_key: int) -> bool:
        """What a RST that closed the subflow says of failure; True when it carries an
        MP_FASTCLOSE with our key (the whole connection is gone)."""
        fastclose = False
        if context.is_join and not context.data_ready:
            self.subflow_rejected = True  # the peer refused the join
        for option in segment.options:
            if type(option) is MpTcpRst:
                self.counters["MPRstRx"] += 1
                if option.reason == MPTCPRST_MIDDLEBOX_INTERFERENCE:
                    self.subflow_rejected = True  # a join, or the initial subflow after joins
            elif type(option) is MpFastclose:
                if option.receiver_key == local_key:
                    self.counters["MPFastcloseRx"] += 1
                    fastclose = True
                else:
                    self.counters["MPFastcloseRxIgnored"] += 1
            elif type(option) is MpFail:
                self.counters["MPFailRx"] += 1
                self.mp_fail_seen = True
        return fastclose

    def on_mp_fail(self, context: SubflowContext, option: MpFail, segment: TcpSegment,
                   offset: int, now: float) -> bool:
        """MP_FAIL option handler (RFC 8684 3.7), the only subflow: answer with MP_FAIL, fall
        back, and send the infinite mapping on the next data segment, acting retroactively
        from the last DATA_ACKed byte. Nothing is sent again: the bytes already on the
        subflow are the stream from now on, as the peer delivers them."""
        self.counters["MPFailRx"] += 1
        self.mp_fail_seen = True
        if self.mode != MPTCP:
            self.pending_mp_fail = None  # the peer's answer to our MP_FAIL
            return False
        alive = [c for c in self.live_subflows if not c.tcp.is_closed]
        if len(alive) > 1 or not self.allow_infinite_fallback:
            return False  # the peer resets that subflow; reinjection follows
        base = self.data.retroactive_base(context)
        if base is None:
            # the rare case of RFC 8684 3.7: re-injected bytes on this subflow, no mapping
            # fits them all: close the subflow with MP_FAIL
            self.counters["MPFailTx"] += 1
            self.counters["MPRstTx"] += 1
            self.effects.reset_subflow(context, now, [MpFail(option.dsn),
                                                      MpTcpRst(MPTCPRST_MPTCP_ERROR)], "reset")
            return True
        self.infinite_map_base = base
        self.infinite_map_pending = True
        self.data.reinject = []
        self.pending_mp_fail = option.dsn  # the answer RFC 8684 3.7 asks for, once
        self.mp_fail_sends_left = 1
        self.fall_back("mp-fail")
        context.tcp.send_ack(now, context)
        return False

    def outcome(self, closed_reason: str | None) -> str:
        if closed_reason in ("reset", "fastclose"):
            return "reset"
        if closed_reason == "timeout":
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
