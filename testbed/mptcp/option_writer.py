"""The MPTCP options a connection puts on its subflows' outgoing segments.

A subflow asks while it builds a segment (through its `SubflowContext`, the subflow's
`OptionProvider`): handshake options on SYNs, a DSS with the data ACK (plus any pending
signal: MP_PRIO, MP_FAIL, ADD_ADDR, REMOVE_ADDR, DATA_FIN) on pure ACKs, and one mapping
per data segment. Reads the connection's parts; takes the signals it sends off their queues.
"""

from __future__ import annotations

from testbed.mptcp.data_transfer import DataTransfer
from testbed.mptcp.fallback import FALLBACK, MPTCP, PENDING, Fallback
from testbed.mptcp.handshake import Handshake
from testbed.mptcp.scoreboard import SentSegment
from testbed.mptcp.signalling import Signalling
from testbed.mptcp.subflow_context import SubflowContext
from testbed.wire.checksum import dss_checksum
from testbed.wire.tcp_options import encoded_length
from testbed.wire.types import Dss, MpPrio, TcpOption

MASK32 = 0xFFFFFFFF
MASK64 = (1 << 64) - 1


class OptionWriter:
    """Builds the MPTCP options of every outgoing segment of one connection."""

    def __init__(self, *, is_client: bool, counters: dict[str, int], handshake: Handshake,
                 data: DataTransfer, signalling: Signalling, fallback: Fallback,
                 live_subflows: list[SubflowContext]) -> None:
        self.is_client = is_client
        self.counters = counters
        self.handshake = handshake
        self.data = data
        self.signalling = signalling
        self.fallback = fallback
        # the connection's live subflows: the first carries the infinite mapping
        self.live_subflows = live_subflows
        # asked for every segment built: the data level's own method, without a hop here
        self.receive_window = data.receive_window
        # subflows whose pending signal did not fit beside the data ACK of their last pure
        # ACK: the connection sends them another pure ACK at once (flush_acks) that carries
        # the signal alone -- after the data ACK, which a client becomes fully established on
        self.signal_owed: list[SubflowContext] = []
        self.signal_alone: SubflowContext | None = None  # the subflow of that ACK, meanwhile

    def _is_first(self, context: SubflowContext) -> bool:
        return bool(self.live_subflows) and context is self.live_subflows[0]

    def handshake_options(self, context: SubflowContext) -> list[TcpOption]:
        return self.handshake.syn_options(context)

    def ack_options(self, context: SubflowContext, budget: int) -> list[TcpOption]:
        data = self.data
        fallback = self.fallback
        mode = fallback.mode
        signalling = self.signalling
        if (context.fully_established and mode == MPTCP and context.mptcp_negotiated
                and data.data_fin_dsn is None and context.pending_prio is None
                and fallback.pending_mp_fail is None and not signalling.pending_echo
                and not signalling.pending_add_addr and not signalling.pending_remove):
            return [data.data_ack_dss()]  # the usual case: nothing but the data ACK
        if mode == PENDING or not context.mptcp_negotiated:
            return []
        if mode == FALLBACK:
            if not self._is_first(context):
                return []
            if fallback.pending_mp_fail is not None:
                # MP_FAIL with a data ACK (as Linux sends it); the infinite mapping (28 bytes
                # with checksums) would not fit beside it: it waits for the next segment
                mp_fail = fallback.take_mp_fail()
                assert mp_fail is not None
                ack = data.data_ack_dss()
                if encoded_length(mp_fail) + encoded_length(ack) <= budget:
                    return [mp_fail, ack]
                return [mp_fail]
            if fallback.infinite_map_pending:
                return [self._infinite_mapping(context.tcp.snd_nxt, data.snd_data_nxt)]
            return []
        if (context.is_join and not context.fully_established
                and not context.tcp.is_passive):
            return [self.handshake.join_third_ack(context)]
        if not context.is_join and self.is_client and not context.fully_established:
            return [self.handshake.capable_third_ack()]
        if context is self.signal_alone:
            # an IPv6 ADD_ADDR with its HMAC (28 bytes) does not fit beside timestamps and a
            # data ACK (nor its echo beside a 64-bit one): like Linux, a pure ACK carries the
            # signal alone (this one, right after the one that carried the data ACK)
            signals = self.signalling.take_signals(0, budget)
            if signals:
                return signals
        options: list[TcpOption] = []
        if context.pending_prio is not None:
            options.append(MpPrio(backup=context.pending_prio))
            self.counters["MPPrioTx"] += 1
            context.pending_prio = None
        mp_fail = fallback.take_mp_fail()
        if mp_fail is not None:
            options.append(mp_fail)
        dss = data.data_ack_dss()
        fin_dsn = data.data_fin_dsn
        if (fin_dsn is not None and data.data_fin_deadline is not None
                and data.snd_data_una <= fin_dsn):
            checksum = (dss_checksum(fin_dsn & MASK64, 0, 1, b"")
                        if self.handshake.checksum else None)
            dss = Dss(data_ack=dss.data_ack, dsn=fin_dsn & MASK64, subflow_seq=0,
                      data_len=1, checksum=checksum, data_fin=True)
        options.append(dss)
        if not self.signalling.pending:
            return options
        used = sum(encoded_length(o) for o in options)
        signals = self.signalling.take_signals(used, budget)
        if (not signals and self.signalling.pending and context is not self.signal_alone
                and context not in self.signal_owed):
            self.signal_owed.append(context)
        options.extend(signals)
        return options

    def send_owed_signals(self, now: float) -> None:
        """A pure ACK carrying only the signal for each subflow in `signal_owed`."""
        owed = self.signal_owed
        while owed:
            context = owed.pop(0)
            if not context.tcp.is_closed:
                self.signal_alone = context
                context.tcp.send_ack(now, context)
                self.signal_alone = None

    def _infinite_mapping(self, subflow_seq: int, dsn: int) -> Dss:
        """DSS with data-level length 0: from `subflow_seq` (or the retroactive base after
        MP_FAIL) every byte maps to the DSN at the same distance (RFC 8684 3.7)."""
        self.fallback.infinite_map_pending = False
        if self.fallback.infinite_map_base is not None:
            subflow_seq, dsn = self.fallback.infinite_map_base
        self.counters["InfiniteMapTx"] += 1
        return Dss(data_ack=self.data.data_reassembly.next & MASK64, dsn=dsn & MASK64,
                   subflow_seq=subflow_seq & MASK32, data_len=0,
                   checksum=0 if self.handshake.checksum else None)

    def data_options(self, context: SubflowContext, segment: SentSegment,
                     budget: int) -> list[TcpOption]:
        dsn = segment.dsn
        if self.fallback.mode == FALLBACK or not context.mptcp_negotiated or dsn is None:
            if self.fallback.infinite_map_pending and self._is_first(context):
                return [self._infinite_mapping(segment.start, dsn if dsn is not None else 0)]
            return []
        payload = segment.payload
        length = len(payload)
        checksum = None
        if self.handshake.checksum:
            checksum = dss_checksum(dsn & MASK64, segment.start & MASK32, length, payload)
        if (not context.fully_established and not context.is_join and self.is_client
                and segment.start == 1):
            return [self.handshake.capable_first_data(length, checksum)]
        return [Dss(data_ack=self.data.data_reassembly.next & MASK64, dsn=dsn & MASK64,
                    subflow_seq=segment.start & MASK32, data_len=length, checksum=checksum)]
