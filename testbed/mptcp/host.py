"""MptcpHost: one host's whole stack, demultiplexing packets by four-tuple and MPTCP token.

Sans-IO (aioquic shape): feed `receive_packet(packet, now)` and `handle_timer(now)`, take
`packets_to_send(now)`, ask `get_timer()` for the next absolute deadline, and drain
`next_event()`. Applications act on `Connection` objects (send/receive/close/abort/...).

Like a kernel, the host answers a packet to a closed port with a RST, an MP_JOIN carrying an
unknown token with a RST + MP_TCPRST, and ignores packets for addresses it does not own.
"""

from __future__ import annotations

import random
from collections import OrderedDict, deque
from dataclasses import dataclass

from testbed.mptcp.addresses import canonical_address, same_family
from testbed.mptcp.config import StackConfig
from testbed.mptcp.connection import Connection
from testbed.mptcp.errors import LocalProtocolError
from testbed.mptcp.events import Event
from testbed.mptcp.subflow_context import SubflowContext
from testbed.wire.crypto import key_to_token
from testbed.wire.types import (
    ACK,
    FIN,
    MPTCPRST_ADMIN_PROHIBITED,
    MPTCPRST_MPTCP_ERROR,
    RST,
    SYN,
    MpFastclose,
    MpJoinSyn,
    MpTcpRst,
    Packet,
    TcpOption,
    TcpSegment,
)

EPHEMERAL_LOW, EPHEMERAL_HIGH = 32768, 60999  # net.ipv4.ip_local_port_range
FASTCLOSED_REMEMBERED = 4096  # four-tuples whose MP_FASTCLOSE RST is answered again
FASTCLOSE_REPEATS = 3  # RFC 8684 3.5 recommends 3 retransmissions of an MP_FASTCLOSE


@dataclass(slots=True)
class FastclosedSubflow:
    """A subflow we closed with RST + MP_FASTCLOSE. A RST is never acknowledged, so whether
    the peer got it is unknowable: it is repeated `left` more times with RTO backoff, and a
    segment still arriving is answered with it at once, at the sequence number it
    acknowledges (RFC 5961 accepts only an exact one) -- at most once an RTO for the same
    acknowledgment number, so a backlog of the peer's ACKs does not turn into a RST flood."""

    four_tuple: tuple[str, int, str, int]
    remote_key: int
    seq: int
    deadline: float
    interval: float
    left: int
    rto: float
    quiet_until: float  # the same acknowledgment number is answered again from then on


class MptcpHost:
    def __init__(self, *, addresses: list[str], config: StackConfig, rng: random.Random,
                 now: float, ephemeral_ports: tuple[int, int] = (EPHEMERAL_LOW, EPHEMERAL_HIGH),
                 ) -> None:
        if not addresses:
            raise ValueError("MptcpHost: at least one address is required")
        low, high = ephemeral_ports
        if not 0 < low <= high < 65536:
            raise ValueError(f"MptcpHost: ephemeral_ports {ephemeral_ports} is not a range in "
                             "1..65535")
        # A stack sharing addresses with a kernel picks ports the kernel never picks itself.
        self.ephemeral_ports = (low, high)
        # either family; one spelling each, as decoded packets spell them (addresses.py)
        self.addresses = list(dict.fromkeys(canonical_address(a) for a in addresses))
        self._address_set = frozenset(self.addresses)
        self.config = config
        self.rng = rng
        self.created_at = now
        self.listening: set[int] = set()
        self.connections: list[Connection] = []
        self._by_tuple: dict[tuple[str, int, str, int],
                             tuple[SubflowContext, Connection]] = {}
        self._by_token: dict[int, Connection] = {}
        self._events: deque[Event] = deque()
        self._output: list[Packet] = []
        # four-tuples of subflows closed by our MP_FASTCLOSE -> the peer's key (bounded, oldest
        # forgotten first): a segment still arriving on one is answered with the RST again
        self._fastclosed: OrderedDict[tuple[str, int, str, int], FastclosedSubflow] = \
            OrderedDict()
        self._fastclose_repeats: list[FastclosedSubflow] = []  # those with repeats left
        # Full-sized frames each local address may still put in this host's own queues, when
        # a driver knows (testbed.mptcp.driver.loop): what Linux's TCP Small Queues keep a
        # sender to. Shared among the address's subflows before each send (their
        # local_quota); empty in the simulator (no limit).
        self.local_queue_room: dict[str, int] = {}
        self.counters = {"RstSentClosedPort": 0, "MPJoinNoTokenFound": 0,
                         "MPJoinRejected": 0, "NotOurAddress": 0, "MPFastcloseRstResent": 0,
                         "MPFastcloseRstRepeated": 0}

    # ------------------------------------------------------------------ API
    def listen(self, port: int) -> None:
        if not 0 < port < 65536:
            raise LocalProtocolError(f"listen: port {port} outside 1..65535")
        self.listening.add(port)

    def connect(self, remote_address: str, remote_port: int, *, now: float,
                local_address: str | None = None) -> Connection:
        remote_address = canonical_address(remote_address)
        if local_address is None:  # the first local address of the remote's family
            local = next((a for a in self.addresses if same_family(a, remote_address)),
                         self.addresses[0])
        else:
            local = canonical_address(local_address)
        if local not in self._address_set:
            raise LocalProtocolError(f"connect: {local} is not one of {self.addresses}")
        port = self.allocate_port(local, remote_address, remote_port)
        connection = Connection(host=self, is_client=True, config=self.config, rng=self.rng,
                                now=now, local_address=local, local_port=port,
                                remote_address=remote_address, remote_port=remote_port,
                                local_key=self._new_key())
        self._add_connection(connection)
        connection.start_active(now)
        return connection

    def receive_packet(self, packet: Packet, now: float) -> None:
        if packet.dst not in self._address_set:
            self.counters["NotOurAddress"] += 1
            return
        segment = packet.tcp
        key = (packet.dst, segment.dst_port, packet.src, segment.src_port)
        found = self._by_tuple.get(key)
        if found is not None:
            subflow, connection = found
            connection.receive_segment(subflow, packet, now)
            return
        flags = segment.flags
        if flags & RST:
            return
        closed = self._fastclosed.get(key)
        if closed is not None and flags & ACK:
            # RFC 8684 3.5 option R sends the RST once: lost on a full queue, or refused as not
            # exactly in sequence (RFC 5961), it leaves the peer's connection open. What the
            # peer still sends (an ACK, a retransmission, a challenge ACK) gets it again, at
            # the sequence number it acknowledges, which RFC 5961 accepts.
            if segment.ack != closed.seq or now >= closed.quiet_until:
                closed.seq = segment.ack
                closed.quiet_until = now + closed.rto
                self.counters["MPFastcloseRstResent"] += 1
                self._send_rst(packet, [MpFastclose(closed.remote_key)])
            return
        if flags & SYN and not flags & ACK:
            join = segment.find(MpJoinSyn)
            if join is not None and self.config.mptcp_enabled:
                self._accept_join(packet, join, now)  # type: ignore[arg-type]
                return
            if segment.dst_port in self.listening:
                self._accept(packet, now)
                return
        self.counters["RstSentClosedPort"] += 1
        self._send_rst(packet, [])

    def _share_local_queue_room(self) -> None:
        """Split each local address's room among the subflows sending from it: as Linux's TCP
        Small Queues gives every socket its own few frames, the lowest-RTT subflow must not
        take the whole room and leave a joined subflow on the same address with nothing."""
        room = self.local_queue_room
        sharing: dict[str, list] = {}
        for connection in self.connections:
            for context in connection.live_subflows:
                subflow = context.tcp
                if subflow.local_address in room:
                    sharing.setdefault(subflow.local_address, []).append(subflow)
        for address, subflows in sharing.items():
            share, extra = divmod(max(room[address], 0), len(subflows))
            for index, subflow in enumerate(subflows):
                subflow.local_quota = share + (1 if index < extra else 0)

    def stop_local_queue_limit(self) -> None:
        """No local queue limit from now on (the driver cannot read the queue)."""
        self.local_queue_room.clear()
        for connection in self.connections:
            for context in connection.live_subflows:
                context.tcp.local_quota = None
                context.tcp.locally_throttled = False  # else its window would never grow again

    def packets_to_send(self, now: float) -> list[Packet]:
        if self.local_queue_room:
            self._share_local_queue_room()
        out = self._output
        self._output = []
        finished = False
        for connection in self.connections:
            connection.flush(now)
            connection.flush_acks(now)
            out.extend(connection.take_output())
            if connection.closed_reason is not None and not connection.live_subflows:
                finished = True
        if finished:  # rebuilt only when a connection is gone (this runs per packet)
            self.connections = [c for c in self.connections
                                if c.closed_reason is None or c.live_subflows]
        return out

    def get_timer(self) -> float | None:
        best = None
        for repeat in self._fastclose_repeats:
            if best is None or repeat.deadline < best:
                best = repeat.deadline
        for connection in self.connections:
            deadline = connection.next_deadline()
            if deadline is not None and (best is None or deadline < best):
                best = deadline
        return best

    def handle_timer(self, now: float) -> None:
        if self._fastclose_repeats:
            self._repeat_fastcloses(now)
        for connection in list(self.connections):
            deadline = connection.next_deadline()
            if deadline is not None and deadline <= now:
                connection.handle_timer(now)

    def resets_pending(self) -> bool:
        """MP_FASTCLOSE RSTs are still to be repeated: a driver keeps running until they go."""
        return bool(self._fastclose_repeats)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ for connections
    def emit(self, event: Event) -> None:
        self._events.append(event)

    def register_subflow(self, context: SubflowContext, connection: Connection) -> None:
        self._by_tuple[context.tcp.four_tuple] = (context, connection)

    def unregister_subflow(self, context: SubflowContext) -> None:
        four_tuple = context.tcp.four_tuple
        found = self._by_tuple.get(four_tuple)
        if found is not None and found[0] is context:
            del self._by_tuple[four_tuple]
            # a RST or FIN may still be waiting in the subflow's outbox
            self._output.extend(context.tcp.take_output())

    def remember_fastclose(self, four_tuple: tuple[str, int, str, int], remote_key: int,
                           seq: int, rto: float, now: float) -> None:
        """Our RST with MP_FASTCLOSE (RFC 8684 3.5 option R, sequence number `seq`) just left
        on this subflow: answer whatever still arrives on it with the RST again, and repeat
        the RST after one RTO, then with backoff, FASTCLOSE_REPEATS times."""
        closed = FastclosedSubflow(four_tuple, remote_key, seq, now + rto, rto, FASTCLOSE_REPEATS,
                                   rto, now)
        self._fastclosed[four_tuple] = closed
        while len(self._fastclosed) > FASTCLOSED_REMEMBERED:
            self._fastclosed.popitem(last=False)
        self._fastclose_repeats.append(closed)

    def _repeat_fastcloses(self, now: float) -> None:
        kept = []
        for repeat in self._fastclose_repeats:
            if repeat.deadline <= now:
                self.counters["MPFastcloseRstRepeated"] += 1
                local, local_port, remote, remote_port = repeat.four_tuple
                reply = TcpSegment(src_port=local_port, dst_port=remote_port, seq=repeat.seq,
                                   ack=0, flags=RST, window=0,
                                   options=[MpFastclose(repeat.remote_key)])
                self._output.append(Packet(src=local, dst=remote, tcp=reply))
                repeat.left -= 1
                repeat.interval *= 2
                repeat.deadline = now + repeat.interval
            if repeat.left > 0:
                kept.append(repeat)
        self._fastclose_repeats = kept

    def connection_closed(self, connection: Connection) -> None:
        if self._by_token.get(connection.local_token) is connection:
            del self._by_token[connection.local_token]

    def allocate_port(self, local_address: str, remote_address: str, remote_port: int) -> int:
        if not same_family(local_address, remote_address):
            raise LocalProtocolError(f"{local_address} and {remote_address} are not of one "
                                     "family (a subflow is IPv4 or IPv6 end to end)")
        for _ in range(1000):
            port = self.rng.randint(*self.ephemeral_ports)
            if (local_address, port, remote_address, remote_port) not in self._by_tuple:
                return port
        raise LocalProtocolError("no free ephemeral port")

    # ------------------------------------------------------------------ internals
    def _new_key(self) -> int:
        while True:
            key = self.rng.getrandbits(64)
            if key and key_to_token(key) not in self._by_token:
                return key

    def _add_connection(self, connection: Connection) -> None:
        self.connections.append(connection)
        self._by_token[connection.local_token] = connection

    def _accept(self, packet: Packet, now: float) -> None:
        connection = Connection(host=self, is_client=False, config=self.config, rng=self.rng,
                                now=now, local_address=packet.dst,
                                local_port=packet.tcp.dst_port, remote_address=packet.src,
                                remote_port=packet.tcp.src_port, local_key=self._new_key())
        self._add_connection(connection)
        connection.start_passive(packet, now)

    def _accept_join(self, packet: Packet, join: MpJoinSyn, now: float) -> None:
        connection = self._by_token.get(join.receiver_token)
        if connection is None:
            self.counters["MPJoinNoTokenFound"] += 1
            self._send_rst(packet, [MpTcpRst(MPTCPRST_MPTCP_ERROR)])
            return
        if connection.accept_join(packet, join, now) is None:
            self.counters["MPJoinRejected"] += 1
            connection.fallback.subflow_rejected = True
            self._send_rst(packet, [MpTcpRst(MPTCPRST_ADMIN_PROHIBITED)])

    def _send_rst(self, packet: Packet, options: list[TcpOption]) -> None:
        """RFC 9293 3.10.7.1: the reset a closed port sends."""
        segment = packet.tcp
        if segment.flags & ACK:
            seq, ack, flags = segment.ack, 0, RST
        else:
            length = len(segment.payload) + (1 if segment.flags & SYN else 0) + (
                1 if segment.flags & FIN else 0)
            seq, ack, flags = 0, (segment.seq + length) & 0xFFFFFFFF, RST | ACK
        reply = TcpSegment(src_port=segment.dst_port, dst_port=segment.src_port, seq=seq,
                           ack=ack, flags=flags, window=0, options=list(options))
        self._output.append(Packet(src=packet.dst, dst=packet.src, tcp=reply))
