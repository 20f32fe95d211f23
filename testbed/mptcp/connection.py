"""One MPTCP connection: its subflows, and what it does with what arrives on them.

aioquic shape: a segment enters a subflow (`Subflow.receive`), which returns what happened
as a `SegmentReceived` value; the connection acts on that (`_act_on`): the opening step,
then the segment's MPTCP options through one table (`_option_handlers`, option type ->
handler), the segments acknowledged, the in-order bytes through the subflow's mapping
receiver to the data level, the FIN. Only then does the subflow send the ACKs and
retransmissions the segment made due (`Subflow.send_due`). Nothing calls back up while a
segment is processed.

The connection composes one object per concern, each with its own typed state:
`Handshake` (keys, MP_CAPABLE/MP_JOIN checks and options), `DataTransfer` (send buffer,
scheduling, data ACKs, reassembly, receive buffer), `Signalling` (ADD_ADDR/REMOVE_ADDR),
`FallbackState` (mode, failure facts) and `OptionWriter` (outgoing options). Each subflow's
MPTCP state is a `SubflowContext`.

Protocol errors raised by the peer's behaviour (RemoteProtocolError) are caught in exactly
one place, `receive_segment`, and turned into a subflow reset (MP_TCPRST with the reason) or,
when the error poisons the whole connection, a reset of every subflow.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import NamedTuple, Protocol

from testbed.mptcp import events
from testbed.mptcp.cc import CouplingGroup, create_congestion_control
from testbed.mptcp.config import StackConfig
from testbed.mptcp.counters import new_counters
from testbed.mptcp.data_transfer import DataTransfer, unwrap_dsn
from testbed.mptcp.errors import LocalProtocolError, RemoteProtocolError
from testbed.mptcp.fallback import FALLBACK, MPTCP, PENDING, Fallback
from testbed.mptcp.handshake import Handshake
from testbed.mptcp.mapping import MappingOutcome, MappingReceiver, unwrap_relative
from testbed.mptcp.option_writer import OptionWriter
from testbed.mptcp.path_manager import create_path_manager
from testbed.mptcp.scheduler import create_scheduler, eligible_subflows
from testbed.mptcp.scoreboard import SentSegment
from testbed.mptcp.signalling import Signalling
from testbed.mptcp.subflow import OpeningStep, SegmentReceived, Subflow
from testbed.mptcp.subflow_context import SubflowContext
from testbed.mptcp.tcp_state import TcpState
from testbed.wire.crypto import key_to_idsn
from testbed.wire.types import (
    AddAddr,
    Dss,
    MpCapable,
    MpFail,
    MpFastclose,
    MpJoinAck,
    MpJoinSyn,
    MpPrio,
    MpTcpRst,
    Packet,
    RemoveAddr,
    TcpOption,
    TcpSegment,
)


class ConnectionHost(Protocol):
    """What a connection needs from the host that demultiplexes its packets (host.py)."""

    addresses: list[str]
    local_queue_room: dict[str, int]

    def emit(self, event: events.Event) -> None: ...

    def register_subflow(self, context: SubflowContext, connection: Connection) -> None: ...

    def unregister_subflow(self, context: SubflowContext) -> None: ...

    def connection_closed(self, connection: Connection) -> None: ...

    def remember_fastclose(self, four_tuple: tuple[str, int, str, int], remote_key: int,
                           seq: int, rto: float, now: float) -> None: ...

    def allocate_port(self, local_address: str, remote_address: str,
                      remote_port: int) -> int: ...


class SegmentFacts(NamedTuple):
    """What a segment's options showed, for acting on what it acknowledged."""

    carried_data_ack: bool  # a DSS with a data ACK, while MPTCP
    carried_mptcp_option: bool  # any MPTCP option: they pass on this path


# the only three combinations, made once: no allocation per segment
NO_FACTS = SegmentFacts(False, False)
MPTCP_OPTION_FACTS = SegmentFacts(False, True)
DATA_ACK_FACTS = SegmentFacts(True, True)

CLOSED = TcpState.CLOSED

# (context, option, segment, subflow offset of the segment, now) -> skip the rest; each
# handler takes its own option class, hence the loose argument types
OptionHandler = Callable[..., bool]


class Connection:
    """An MPTCP connection (or the plain TCP connection it fell back to)."""

    def __init__(self, *, host: ConnectionHost, is_client: bool, config: StackConfig,
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
        self.closed_reason: str | None = None
        self.handshake = Handshake(config=config, counters=self.counters, local_key=local_key,
                                   is_client=is_client)
        self.data = DataTransfer(config=config, counters=self.counters)
        self.live_subflows: list[SubflowContext] = []  # not closed yet
        self.subflows_with_output: list[SubflowContext] = []  # closed ones may have a RST left
        self.created_subflows: list[SubflowContext] = []  # every one ever, for stats()
        self.signalling = Signalling(config=config, counters=self.counters, local_address=local_address,
                                     local_port=local_port, handshake=self.handshake,
                                     live_subflows=self.live_subflows, effects=self)
        self.fallback = Fallback(counters=self.counters, data=self.data,
                                 live_subflows=self.live_subflows, effects=self)
        self.scheduler = create_scheduler(config.scheduler)
        self.path_manager = create_path_manager(config.path_manager)
        self.cc_group = CouplingGroup()
        self._next_subflow_id = 0
        self.options = OptionWriter(is_client=is_client, counters=self.counters,
                                    handshake=self.handshake, data=self.data,
                                    signalling=self.signalling, fallback=self.fallback,
                                    live_subflows=self.live_subflows)
        self.established_reported = False
        self.last_now = now  # the latest time seen, for API calls made without one
        # MPTCP options of received segments -> handler (aioquic's frame handlers); a
        # handler returns True when the rest of the segment's options must be skipped
        self._option_handlers: dict[type, OptionHandler] = {
            Dss: self._on_dss,
            MpCapable: self._on_mp_capable_data,
            AddAddr: self.signalling.on_add_addr,
            RemoveAddr: self.signalling.on_remove_addr,
            MpPrio: self.signalling.on_mp_prio,
            MpFail: self.fallback.on_mp_fail,
            MpFastclose: self._on_fastclose,
            MpJoinAck: self._on_resent_join_ack,
        }

    # ================================================================== properties
    @property
    def mode(self) -> str:
        return self.fallback.mode

    @property
    def checksum(self) -> bool:
        return self.handshake.checksum

    @property
    def local_key(self) -> int:
        return self.handshake.local_key

    @property
    def local_token(self) -> int:
        return self.handshake.local_token

    @property
    def remote_key(self) -> int | None:
        return self.handshake.remote_key

    @property
    def remote_token(self) -> int | None:
        return self.handshake.remote_token

    @property
    def remote_addresses(self) -> dict[int, tuple[str, int | None]]:
        return self.signalling.remote_addresses

    @property
    def local_addresses(self) -> list[str]:
        return list(self.host.addresses)

    @property
    def bytes_delivered(self) -> int:
        return self.data.bytes_delivered

    def _new_subflow(self, local_address: str, local_port: int, remote_address: str,
                     remote_port: int, now: float) -> SubflowContext:
        cc = create_congestion_control(self.config.congestion_control, mss=self.config.mss,
                                       initial_window_segments=self.config.initial_cwnd_segments,
                                       group=self.cc_group, hystart=self.config.hystart)
        subflow = Subflow(local_address=local_address, local_port=local_port,
                          remote_address=remote_address, remote_port=remote_port,
                          config=self.config, rng=self.rng, cc=cc, now=now,
                          subflow_id=self._next_subflow_id, local_queue_room=self.host.local_queue_room)
        self._next_subflow_id += 1
        subflow.reserved_option_bytes = self._dss_overhead()
        context = SubflowContext(tcp=subflow,
                                 mapping_receiver=MappingReceiver(checksum=self.checksum),
                                 writer=self.options)
        self.live_subflows.append(context)
        self.subflows_with_output.append(context)
        self.created_subflows.append(context)
        self.host.register_subflow(context, self)
        return context

    def _dss_overhead(self) -> int:
        """Bytes of a DSS with 64-bit data ACK and 64-bit mapping (+ checksum)."""
        return 28 if self.checksum else 26

    # ================================================================== opening
    def start_active(self, now: float) -> SubflowContext:
        context = self._new_subflow(self.local_address, self.local_port, self.remote_address,
                                    self.remote_port, now)
        context.tcp.open_active(now, context)
        return context

    def start_passive(self, syn_packet: Packet, now: float) -> SubflowContext:
        syn = syn_packet.tcp
        context = self._new_subflow(self.local_address, self.local_port, self.remote_address,
                                    self.remote_port, now)
        if self.handshake.accept_capable_syn(syn):
            context.mapping_receiver = MappingReceiver(checksum=self.checksum)
            context.mptcp_negotiated = True
        context.tcp.open_passive(syn, now, context)
        return context

    def can_open_subflow(self) -> bool:
        alive = [c for c in self.live_subflows if not c.tcp.is_closed]
        return (self.fallback.mode == MPTCP and self.closed_reason is None
                and not self.data.data_fin_acked
                and len(alive) < self.config.max_subflows and self.remote_token is not None)

    def open_subflow(self, local_address: str, remote_address: str, remote_port: int, *,
                     now: float, backup: bool = False) -> SubflowContext:
        """Start an MP_JOIN subflow (used by path managers, or directly by a test)."""
        if self.fallback.mode != MPTCP:
            raise LocalProtocolError(f"open_subflow: connection is {self.fallback.mode}, not mptcp")
        if local_address not in self.host.addresses:
            raise LocalProtocolError(f"open_subflow: {local_address} is not an address of "
                                     f"this host {self.host.addresses}")
        port = self.host.allocate_port(local_address, remote_address, remote_port)
        context = self._new_subflow(local_address, port, remote_address, remote_port, now)
        context.is_join = context.mptcp_negotiated = True
        context.backup_local = backup
        context.local_nonce = self.rng.getrandbits(32)
        context.local_address_id = self.signalling.local_address_id(local_address)
        self.counters["MPJoinSynTx"] += 1
        context.tcp.open_active(now, context)
        return context

    def accept_join(self, packet: Packet, join: MpJoinSyn, now: float) -> SubflowContext | None:
        """A SYN with MP_JOIN carrying our token arrived; None when refused."""
        self.counters["MPJoinSynRx"] += 1
        alive = [c for c in self.live_subflows if not c.tcp.is_closed]
        if (self.fallback.mode != MPTCP or self.closed_reason is not None or self.remote_key is None
                or len(alive) >= self.config.max_subflows):
            return None
        syn = packet.tcp
        context = self._new_subflow(packet.dst, syn.dst_port, packet.src, syn.src_port, now)
        self.handshake.accept_join_syn(context, join, self.rng.getrandbits(32))
        context.local_address_id = self.signalling.join_address_id(packet.dst, syn.dst_port)
        context.tcp.open_passive(syn, now, context)
        return context

    def _on_established(self, context: SubflowContext, now: float) -> None:
        subflow = context.tcp
        if context.is_join:
            if subflow.is_passive:
                context.fully_established = context.data_ready = True
                self.fallback.allow_infinite_fallback = False
                subflow.send_ack(now, context)  # the fourth ACK: tells the initiator it may send
                self.host.emit(events.SubflowEstablished(self, context))
            else:
                subflow.resend_ack_until_answered(now)  # the third ACK, until the fourth
            return
        # the initial subflow
        context.data_ready = True
        if context.mptcp_negotiated and self.remote_key is not None:
            self._become_mptcp()
            context.fully_established = subflow.is_passive
        else:
            self.fallback.plain_tcp(context, self.config.mptcp_enabled)
        if not self.established_reported:
            self.established_reported = True
            if not self.is_client:
                self.host.emit(events.ConnectionAccepted(self))
            self.host.emit(events.ConnectionEstablished(self))
        if self.fallback.mode == MPTCP and context.fully_established:
            self.path_manager.on_established(self, now)  # server: keys known both ways

    def _become_mptcp(self) -> None:
        assert self.remote_key is not None
        self.fallback.keys_exchanged()
        self.handshake.keys_known()
        self.data.rebase(key_to_idsn(self.local_key), key_to_idsn(self.remote_key))
        initial = self.live_subflows[0].tcp
        initial.reserved_option_bytes = self._dss_overhead()  # checksum is known only now
        self.data.peer_window_right = self.data.snd_data_una + initial.snd_wnd

    def report_fallback(self, kind: str) -> None:
        self.host.emit(events.FallbackOccurred(self, kind))

    # ================================================================== a segment arrives
    def receive_segment(self, context: SubflowContext, packet: Packet, now: float) -> None:
        """A segment for this subflow: the subflow processes it, the connection acts on
        what it did, the subflow sends what became due. The one catch site for
        RemoteProtocolError."""
        self.last_now = now
        subflow = context.tcp
        try:
            received = subflow.receive(packet.tcp, now)
            self._act_on(context, received, now)
        except RemoteProtocolError as error:
            self._on_protocol_error(context, error, now)
            return
        if received.reply_due or subflow.ack_pending:  # acting on it may have made an ACK due
            subflow.send_due(now, context)

    def _on_protocol_error(self, context: SubflowContext, error: RemoteProtocolError,
                           now: float) -> None:
        self.counters["MPRstTx"] += 1
        if error.subflow_rejected:
            self.fallback.subflow_rejected = True
        # an error on the initial subflow poisons the connection only when nothing else
        # carries it (Linux resets just that subflow once joins exist)
        alone = not any(c is not context and not c.tcp.is_closed for c in self.live_subflows)
        if error.whole_connection or (not context.is_join and alone):
            self.closed_reason = None
            for other in list(self.live_subflows):
                self.reset_subflow(other, now, [MpTcpRst(error.reason)], "reset")
            self._close_connection("reset", now, send_rst=False)
        else:
            self.reset_subflow(context, now, [MpTcpRst(error.reason)], "rejected")

    def _act_on(self, context: SubflowContext, received: SegmentReceived, now: float) -> None:
        """Everything MPTCP about one received segment, in the order TCP saw it."""
        subflow = context.tcp
        segment = received.segment
        if received.rst:
            if self.fallback.on_rst(context, segment, self.local_key):
                self._close_connection("fastclose", now, send_rst=False)
            if received.closed_reason is not None:
                self._subflow_closed(context, received.closed_reason, now)
            return
        step = received.opening_step  # OpeningStep.NONE (0) on all but two segments
        if step:
            if step == OpeningStep.SYNACK:
                self.handshake.check_synack(context, segment)
                if context.mptcp_negotiated and not context.is_join:
                    context.mapping_receiver = MappingReceiver(checksum=self.checksum)
                self._on_established(context, now)
                return
            self.handshake.check_third_ack(context, segment)
            if received.closed_reason is None and not context.is_join:  # MPC data: a mapping
                self._on_established(context, now)
        facts = NO_FACTS
        if received.options_apply:
            facts = self._on_segment_options(context, segment, received.offset, now)
            if subflow.state is CLOSED:
                return
        if received.acked is not None:
            self._on_subflow_acked(context, received.acked, facts, now)
        if received.closed_reason is not None:
            self._subflow_closed(context, received.closed_reason, now)
            return
        if step and context.is_join:  # the join's third ACK
            self._on_established(context, now)
        if received.data:
            self.deliver(context, context.mapping_receiver.feed(received.data_offset, received.data), now)
            if subflow.state is CLOSED:
                return
        if received.fin:
            self._on_fin(context, now)

    def _on_segment_options(self, context: SubflowContext, segment: TcpSegment, offset: int,
                            now: float) -> SegmentFacts:
        if not context.mptcp_negotiated or self.fallback.mode == PENDING:
            return NO_FACTS
        if (context.is_join and not context.fully_established
                and not context.tcp.is_passive):
            context.fully_established = context.data_ready = True  # the fourth ACK
            self.fallback.allow_infinite_fallback = False
            context.tcp.stop_resending_ack()
            self.host.emit(events.SubflowEstablished(self, context))
        handlers = self._option_handlers
        carried_data_ack = carried_mptcp_option = False
        for option in segment.options:
            handler = handlers.get(type(option))
            if handler is None:
                continue  # TCP's own options (timestamps, SACK)
            carried_mptcp_option = True
            if (type(option) is Dss and option.data_ack is not None  # type: ignore[union-attr]
                    and self.fallback.mode == MPTCP):
                carried_data_ack = True
            if handler(context, option, segment, offset, now):
                break
        if carried_data_ack:
            return DATA_ACK_FACTS
        return MPTCP_OPTION_FACTS if carried_mptcp_option else NO_FACTS

    # ------------------------------------------------------------------ option handlers
    def _on_dss(self, context: SubflowContext, dss: Dss, segment: TcpSegment, offset: int,
                now: float) -> bool:
        data = self.data
        if not context.fully_established and not context.is_join:
            context.fully_established = True  # MP_CAPABLE client: the server sent a DSS
            if self.fallback.mode == MPTCP:
                # like Linux, the client's path manager starts once fully established
                self.path_manager.on_established(self, now)
        if dss.data_ack is not None and self.fallback.mode == MPTCP:
            ack = unwrap_dsn(dss.data_ack, data.snd_data_una, dss.data_ack_64)
            if ack > data.snd_data_una:
                self._on_data_ack(ack, now)
            right = ack + (segment.window << context.tcp.peer_window_shift)
            if right > data.peer_window_right:
                data.peer_window_right = right
        if dss.data_len is None or dss.dsn is None:
            return False
        dsn = unwrap_dsn(dss.dsn, data.data_reassembly.next, dss.dsn_64)
        if dss.data_len == 0:
            self.fallback.on_infinite_mapping(context, dsn, dss, offset, now)
            return False
        if self.checksum and dss.checksum is None and self.fallback.mode == MPTCP:
            raise self.fallback.missing_checksum()
        if self.fallback.mode != MPTCP:
            return False
        if dss.data_fin and dss.subflow_seq == 0 and dss.data_len == 1:
            self._on_data_fin(dsn, now, context)
            return False
        assert dss.subflow_seq is not None
        start = unwrap_relative(dss.subflow_seq, offset)
        length = dss.data_len - (1 if dss.data_fin else 0)
        receiver = context.mapping_receiver
        if not receiver.add(start, length, dsn, dss.data_len, dss.checksum, dss.data_fin):
            self.counters["DSSNotMatching"] += 1
        elif receiver.pending:
            self.deliver(context, receiver.process(), now)
        return False

    def _on_mp_capable_data(self, context: SubflowContext, capable: MpCapable,
                            segment: TcpSegment, offset: int, now: float) -> bool:
        """MP_CAPABLE with data-level length: the implicit first mapping (DSN = IDSN + 1)."""
        if context.is_join or self.is_client or capable.data_len is None:
            return False
        if self.handshake.remote_key is None and capable.sender_key is not None:
            self.handshake.remote_key = capable.sender_key
        context.mapping_receiver.add(1, capable.data_len, self.data.remote_idsn + 1,
                                     capable.data_len, capable.checksum, False)
        return False

    def _on_fastclose(self, context: SubflowContext, option: MpFastclose,
                      segment: TcpSegment, offset: int, now: float) -> bool:
        if option.receiver_key != self.local_key:
            self.counters["MPFastcloseRxIgnored"] += 1
            return True
        self.counters["MPFastcloseRx"] += 1
        self._close_connection("fastclose", now, send_rst=True)
        return True

    def _on_resent_join_ack(self, context: SubflowContext, option: MpJoinAck,
                            segment: TcpSegment, offset: int, now: float) -> bool:
        if context.tcp.is_passive:
            context.tcp.ack_pending = True  # a resent third ACK: the fourth was lost
        return False

    # ------------------------------------------------------------------ data arriving
    def deliver(self, context: SubflowContext, outcome: MappingOutcome, now: float) -> None:
        transfer = self.data
        for dsn, data in outcome.delivered:
            readable = transfer.receive_data(dsn, data)
            if readable:  # edge-triggered: the connection became readable
                self.host.emit(events.DataReceived(self, readable))
            fin_dsn = transfer.peer_data_fin_dsn
            if fin_dsn is not None and transfer.data_reassembly.next == fin_dsn:
                self._on_data_fin(fin_dsn, now)
        if outcome.data_fin_dsn is not None:
            self._on_data_fin(outcome.data_fin_dsn, now, context)
        if outcome.checksum_failed is not None:
            self.fallback.on_checksum_failure(context, outcome.checksum_failed, now)
        elif outcome.unmapped:
            self.fallback.on_unmapped_data(context, now)

    def _on_data_fin(self, dsn: int, now: float, context: SubflowContext | None = None) -> None:
        verdict = self.data.on_peer_data_fin(dsn)
        if verdict == "again":
            if context is not None and not context.tcp.is_closed:
                context.tcp.send_ack(now, context)  # a resent DATA_FIN: our data ACK was lost
            return
        if verdict == "ahead":
            return
        self.host.emit(events.DataEndReceived(self))
        # acknowledge the DATA_FIN at data level now, on every subflow: one of them may
        # be on a dead path, and a pure ACK is never retransmitted
        for other in self.live_subflows:
            if not other.tcp.is_closed and other.data_ready:
                other.tcp.send_ack(now, other)
        self._maybe_finish(now)

    # ------------------------------------------------------------------ ACKs arriving
    def _on_subflow_acked(self, context: SubflowContext, segments: list[SentSegment],
                          facts: SegmentFacts, now: float) -> None:
        subflow = context.tcp
        data = self.data
        if self.fallback.mode == FALLBACK:
            reached = data.fallback_acked(segments)
            if reached > data.snd_data_una:
                self._on_data_ack(reached, now)
            if subflow.fin_offset is not None:
                self._maybe_finish(now)
            return
        if context.stale:
            context.stale = False  # the path works again
            self.counters["SubflowRecover"] += 1
        if self.fallback.mode != MPTCP or not context.mptcp_negotiated:
            return
        data.note_unconfirmed(context, segments)
        if (facts.carried_data_ack or facts.carried_mptcp_option
                or not any(s.payload for s in segments)):
            return
        # no MPTCP option at all on a segment acknowledging data: DSS is stripped. A segment
        # with another MPTCP option proves they pass: Linux sends ADD_ADDR (and its echo) on a
        # pure ACK that carries no DSS, and that ACK may well acknowledge new data.
        self.fallback.on_data_acked_without_dss(context)
        self._on_subflow_acked(context, segments, facts, now)

    def _on_data_ack(self, ack: int, now: float) -> None:
        if self.data.on_data_ack(ack):
            self.host.emit(events.SendBufferAvailable(self, self.data.send_buffer_free()))
        data = self.data
        if data.data_fin_dsn is not None and data.snd_data_una == ack and data.data_fin_acked:
            data.data_fin_deadline = None
            self._maybe_finish(now)

    def _on_fin(self, context: SubflowContext, now: float) -> None:
        if self.fallback.mode == FALLBACK and context is self.live_subflows[0]:
            if not self.data.peer_data_fin_received:
                self.data.peer_data_fin_received = True
                self.host.emit(events.DataEndReceived(self))
            self._maybe_finish(now)
            return
        self._close_subflow(context, now)  # MPTCP: the peer closed this subflow; close ours

    # ================================================================== subflows closing
    def reset_subflow(self, context: SubflowContext, now: float,
                       rst_options: list[TcpOption] | None = None, reason: str = "reset") -> None:
        closed = context.tcp.reset(self.data.receive_window(), rst_options, reason)
        if closed is not None:
            self._subflow_closed(context, closed, now)

    def _close_subflow(self, context: SubflowContext, now: float) -> None:
        closed = context.tcp.close(now, context)
        if closed is not None:
            self._subflow_closed(context, closed, now)

    def _on_subflow_timeout(self, context: SubflowContext) -> None:
        """A subflow's RTO fired without progress: mark it stale and send what it carries
        that the peer has not acknowledged at data level again on the others (RFC 8684
        3.3.6; Linux marks the subflow stale and re-sends pending data on active subflows).
        Only when another active subflow exists: alone, the subflow's own RTO is all there is.
        The peer drops whichever copy arrives second."""
        if self.fallback.mode != MPTCP or context.stale:
            return
        # any other working subflow counts, backups included: eligible_subflows() would
        # hide a backup behind this very (regular, not yet stale) subflow
        if not any(c is not context and not c.stale and c.data_ready and c.tcp.fin_offset is None
                   and not c.tcp.is_closed and c.tcp.close_reason is None
                   for c in self.live_subflows):
            return
        context.stale = True
        self.counters["SubflowStale"] += 1
        self.data.reinject_unconfirmed(context.tcp.scoreboard.unacked())

    def _subflow_closed(self, context: SubflowContext, reason: str, now: float) -> None:
        """The subflow closed (for whatever reason): forget it, send again what it carried
        unconfirmed, and close the connection when it was the last one."""
        if context in self.live_subflows:
            self.live_subflows.remove(context)
        self.host.unregister_subflow(context)
        self.host.emit(events.SubflowClosed(self, context, reason))
        if self.closed_reason is not None:
            return
        data = self.data
        if self.fallback.mode == MPTCP:
            data.reinject_all_of(context)
            if any(not c.tcp.is_closed for c in self.live_subflows):
                return
        finished = (data.peer_data_fin_received
                    and (data.data_fin_dsn is None or data.data_fin_acked
                         or self.fallback.mode == FALLBACK))
        if context.is_join and self.fallback.mode == MPTCP and reason != "closed":
            return
        self._close_connection("closed" if finished or reason == "closed" else reason, now,
                               send_rst=False)

    # ================================================================== closing
    def _maybe_finish(self, now: float) -> None:
        """Close the subflows once both directions are finished (DATA_FINs acknowledged;
        after fallback: our FIN sent after all data, and both FINs exchanged)."""
        if self.closed_reason is not None:
            return
        data = self.data
        if self.fallback.mode == FALLBACK:
            context = self.live_subflows[0] if self.live_subflows else None
            if context is None:
                return
            if (data.data_fin_requested and data.snd_data_nxt == data.send_end
                    and context.tcp.fin_offset is None):
                self._close_subflow(context, now)
            if context.tcp.state in (TcpState.TIME_WAIT, TcpState.CLOSED):
                self._close_connection("closed", now, send_rst=False)
            return
        if data.data_fin_acked and data.peer_data_fin_received:
            self._close_connection("closed", now, send_rst=False)
            for context in list(self.live_subflows):
                self._close_subflow(context, now)

    def _close_connection(self, reason: str, now: float, *, send_rst: bool) -> None:
        if self.closed_reason is not None:
            return
        self.closed_reason = reason
        for context in list(self.live_subflows):
            if send_rst or (not context.tcp.is_closed and reason != "closed"):
                self.reset_subflow(context, now, reason=reason)
        self.host.emit(events.ConnectionClosed(self, reason))
        self.host.connection_closed(self)

    # ================================================================== application API
    def send_buffer_free(self) -> int:
        return self.data.send_buffer_free()

    def send(self, data: bytes | memoryview) -> int:
        """Queue data; returns how many bytes fit in the send buffer (the rest is the
        caller's to retry after a SendBufferAvailable event)."""
        if self.data.data_fin_requested or self.closed_reason is not None:
            raise LocalProtocolError("send() after close() or on a closed connection")
        return self.data.send(data)

    def receive(self, max_bytes: int = -1) -> bytes:
        """Take up to max_bytes (all when negative) of in-order received data."""
        data = self.data.receive(max_bytes)
        if data:
            self._window_update()
        return data

    def _window_update(self) -> None:
        """Tell the peer the window opened (as Linux does after reads free space)."""
        window = self.data.receive_window()
        for context in self.live_subflows:
            subflow = context.tcp
            if subflow.state is TcpState.ESTABLISHED and context.data_ready:
                if (subflow.last_window_advertised < subflow.mss * 2
                        and window >= subflow.mss * 2) or (
                        window >= 2 * subflow.last_window_advertised + subflow.mss):
                    subflow.ack_pending = True
                return

    def close(self) -> None:
        """Close our sending direction: DATA_FIN after all queued data (FIN after fallback)."""
        if self.closed_reason is not None:
            raise LocalProtocolError("close() on a closed connection")
        self.data.data_fin_requested = True

    def abort(self, now: float | None = None) -> None:
        """MP_FASTCLOSE: RST on every subflow carrying the peer's key (plain RST if TCP)."""
        now = self.last_now if now is None else now
        if self.closed_reason is not None:
            return
        options: list[TcpOption] = []
        if self.fallback.mode == MPTCP and self.remote_key is not None:
            options = [MpFastclose(self.remote_key)]
            self.counters["MPFastcloseTx"] += 1
        self.closed_reason = "fastclose"
        for context in list(self.live_subflows):
            subflow = context.tcp
            if (options and self.remote_key is not None and not subflow.is_closed
                    and subflow.state is not TcpState.SYN_SENT):
                self.host.remember_fastclose(subflow.four_tuple, self.remote_key,
                                             (subflow.iss + subflow.snd_nxt) & 0xFFFFFFFF,
                                             subflow.rtt.rto, now)
            self.reset_subflow(context, now, options, "fastclose")
        self.host.emit(events.ConnectionClosed(self, "fastclose"))
        self.host.connection_closed(self)

    def add_address(self, address: str, *, now: float | None = None,
                    port: int | None = None) -> int:
        """Announce a local address (ADD_ADDR, retransmitted until echoed)."""
        now = self.last_now if now is None else now
        if self.fallback.mode != MPTCP or self.remote_key is None:
            raise LocalProtocolError(f"add_address: connection is {self.fallback.mode}, not mptcp")
        return self.signalling.add_address(address, port, now)

    def remove_address(self, address: str, *, now: float | None = None) -> None:
        """REMOVE_ADDR for a local address, and close our subflows that use it."""
        self.signalling.remove_address(address, self.last_now if now is None else now)

    def set_backup(self, context: SubflowContext, backup: bool, *,
                   now: float | None = None) -> None:
        """MP_PRIO on that subflow: ask the peer to treat it as (non-)backup."""
        self.signalling.set_backup(context, backup, self.last_now if now is None else now)

    def address_announced(self, address_id: int, address: str, port: int | None,
                          now: float) -> None:
        self.host.emit(events.AddressAnnounced(self, address_id, address, port))
        self.path_manager.on_address_announced(self, address_id, address, port, now)

    def address_removed(self, address_id: int) -> None:
        self.host.emit(events.AddressRemoved(self, address_id))

    # ================================================================== host-facing
    def flush(self, now: float) -> None:
        """Schedule queued data onto subflows and send any due DATA_FIN."""
        self.last_now = now
        if self.closed_reason is not None or self.fallback.mode == PENDING:
            return
        data = self.data
        if self.fallback.mode == FALLBACK:
            if not self.live_subflows:
                return
            first = self.live_subflows[0]
            data.send_fallback(first, now)
            if self.fallback.infinite_map_pending and data.snd_data_nxt == data.send_end:
                first.tcp.send_ack(now, first)
            if data.data_fin_requested and data.snd_data_nxt == data.send_end:
                self._maybe_finish(now)
            return
        if data.reinject or data.snd_data_nxt < data.send_end:
            data.schedule_mptcp(eligible_subflows(self.live_subflows), self.scheduler, now)
        data.arm_data_retransmission(self.live_subflows, now)
        if (data.data_fin_requested and data.data_fin_dsn is None
                and data.snd_data_nxt == data.send_end and not data.reinject):
            data.data_fin_dsn = data.send_end
            self._send_data_fin(now)

    def _send_data_fin(self, now: float) -> bool:
        """DATA_FIN on every usable subflow (as Linux's mptcp_send_ack), False if none: a pure
        ACK is never retransmitted by TCP, so one sent on a dead path is lost until our timer."""
        usable = eligible_subflows(self.live_subflows)
        if usable:
            self.data.data_fin_deadline = (now + min(c.tcp.rtt.rto for c in usable)
                                           * self.data.data_fin_backoff)
            for context in usable:
                context.tcp.send_ack(now, context)
        return bool(usable)

    def next_deadline(self) -> float | None:
        best = None
        for context in self.live_subflows:
            deadline = context.tcp.next_deadline()
            if deadline is not None and (best is None or deadline < best):
                best = deadline
        for deadline in (self.data.data_fin_deadline, self.signalling.next_deadline(),
                         self.data.data_rtx_deadline):
            if deadline is not None and (best is None or deadline < best):
                best = deadline
        return best

    def handle_timer(self, now: float) -> None:
        for context in list(self.live_subflows):
            subflow = context.tcp
            deadline = subflow.next_deadline()
            if deadline is not None and deadline <= now:
                timeouts = subflow.retransmit_count
                closed = subflow.handle_timer(now, context)
                if closed is not None:
                    self._subflow_closed(context, closed, now)
                elif (subflow.retransmit_count > timeouts and not subflow.is_closed
                        and subflow.retransmit_count >= self.config.stale_loss_count):
                    self._on_subflow_timeout(context)
        data = self.data
        if data.data_fin_deadline is not None and now >= data.data_fin_deadline:
            data.data_fin_deadline = None
            data.data_fin_backoff = min(data.data_fin_backoff * 2, 64)
            if not self._send_data_fin(now):  # no usable subflow right now: try later
                data.data_fin_deadline = now + self.config.initial_rto * data.data_fin_backoff
        data.data_retransmission_due(now, self.fallback.mode == MPTCP)
        self.signalling.handle_timer(now)

    def take_output(self) -> list[Packet]:
        out: list[Packet] = []
        for context in self.subflows_with_output:
            subflow = context.tcp
            if subflow.outbox:
                out.extend(subflow.take_output())
        if len(self.subflows_with_output) != len(self.live_subflows):
            self.subflows_with_output = [c for c in self.subflows_with_output
                                         if not c.tcp.is_closed or c.tcp.outbox]
        return out

    def flush_acks(self, now: float) -> None:
        for context in self.live_subflows:
            if context.tcp.ack_pending:
                context.tcp.send_ack(now, context)
        self.options.send_owed_signals(now)  # signals that did not fit beside a data ACK

    # ================================================================== reporting
    def outcome(self) -> str:
        return self.fallback.outcome(self.closed_reason)

    def stats(self) -> dict:
        return {
            "outcome": self.outcome(),
            "mode": self.fallback.mode,
            "checksum": self.checksum,
            "closed_reason": self.closed_reason,
            "bytes_delivered": self.bytes_delivered,
            "subflows": [
                {"id": s.subflow_id, "local": f"{s.local_address}:{s.local_port}",
                 "remote": f"{s.remote_address}:{s.remote_port}",
                 "bytes_sent": s.bytes_sent, "bytes_received": s.bytes_received,
                 "backup": c.backup, "state": s.state.value, "join": c.is_join,
                 "srtt": s.rtt.srtt, "cwnd": s.cc.cwnd,
                 "close_reason": s.close_reason}
                for c, s in ((c, c.tcp) for c in self.created_subflows)],
            "counters": dict(self.counters),
        }
