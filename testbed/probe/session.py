"""The prober's side of one connection: hand-built segments, sequence bookkeeping, a trace.

A probe script never opens a socket: it builds segments with `testbed.wire` values and hands
them to a `Link` (raw packets in a testbed host, or the sans-IO stack in memory for unit
tests), then waits for what the target answers. `Session` keeps only what a script needs to
write the next segment (subflow sequence numbers, keys, DSNs) and records every segment both
ways as one text line, which becomes the probe's evidence.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from testbed.wire import dss_checksum, join_ack_hmac, key_to_idsn, key_to_token
from testbed.wire.types import (
    ACK,
    FIN,
    MPCAPABLE_FLAG_HMAC_SHA256,
    PSH,
    RST,
    SYN,
    AddAddr,
    Dss,
    MaximumSegmentSize,
    MpCapable,
    MpFail,
    MpFastclose,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    MpPrio,
    MpTcpRst,
    Packet,
    RemoveAddr,
    TcpOption,
    TcpSegment,
    UnknownMptcp,
)

U32 = 0xFFFFFFFF
U64 = (1 << 64) - 1
WINDOW = 65535
TRACE_LIMIT = 40  # lines kept per probe: the evidence should stay readable


class ProbeTimeout(Exception):
    """The probe used up its time budget (the target is too slow or gone)."""


class TargetSilent(Exception):
    """The target did not answer an MPTCP SYN at all: no probe can judge anything."""


class Link(Protocol):
    """Where a probe's packets go: a real host's raw sockets, or an in-memory stack."""

    def send(self, packet: Packet) -> None: ...

    def receive(self, timeout_s: float) -> Packet | None:
        """The next packet for the prober, or None when `timeout_s` passed without one."""
        ...

    def now(self) -> float: ...


def _flags(flags: int) -> str:
    names = ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (ACK, "."))
    return "".join(letter for bit, letter in names if flags & bit) or "-"


def describe_option(option: TcpOption) -> str | None:
    """A short text form of an MPTCP option (plain TCP options are left out of traces)."""
    if isinstance(option, MpCapable):
        parts = [f"mpc v{option.version} flags={option.flags:#04x}"]
        if option.sender_key is not None:
            parts.append(f"key={option.sender_key:#x}")
        if option.receiver_key is not None:
            parts.append(f"rkey={option.receiver_key:#x}")
        if option.data_len is not None:
            parts.append(f"dll={option.data_len}")
        if option.checksum is not None:
            parts.append(f"csum={option.checksum:#06x}")
        return " ".join(parts)
    if isinstance(option, Dss):
        parts = ["dss"]
        if option.data_ack is not None:
            parts.append(f"dack{8 if option.data_ack_64 else 4}={option.data_ack:#x}")
        if option.dsn is not None:
            parts.append(f"dsn{8 if option.dsn_64 else 4}={option.dsn:#x} ssn={option.subflow_seq}"
                         f" dll={option.data_len}")
        if option.checksum is not None:
            parts.append(f"csum={option.checksum:#06x}")
        if option.data_fin:
            parts.append("fin")
        return " ".join(parts)
    if isinstance(option, MpJoinSyn):
        return f"mpj-syn id={option.address_id} token={option.receiver_token:#010x} b={int(option.backup)}"
    if isinstance(option, MpJoinSynAck):
        return f"mpj-synack id={option.address_id} hmac={option.sender_truncated_hmac:#018x}"
    if isinstance(option, MpJoinAck):
        return f"mpj-ack hmac={option.sender_hmac[:4].hex()}.."
    if isinstance(option, AddAddr):
        port = f":{option.port}" if option.port is not None else ""
        hmac = f" hmac={option.hmac:#x}" if option.hmac is not None else ""
        return f"add_addr{'-echo' if option.echo else ''} id={option.address_id} {option.address}{port}{hmac}"
    if isinstance(option, RemoveAddr):
        return f"remove_addr ids={list(option.address_ids)}"
    if isinstance(option, MpPrio):
        return f"mp_prio b={int(option.backup)}"
    if isinstance(option, MpFail):
        return f"mp_fail dsn={option.dsn:#x}"
    if isinstance(option, MpFastclose):
        return f"mp_fastclose key={option.receiver_key:#x}"
    if isinstance(option, MpTcpRst):
        return f"mp_tcprst reason={option.reason}{' T' if option.transient else ''}"
    if isinstance(option, UnknownMptcp):
        return f"mptcp subtype={option.subtype} raw={option.data.hex()}"
    return None


def find(packet: Packet, option_type: type) -> TcpOption | None:
    return packet.tcp.find(option_type)


def has_mptcp(packet: Packet) -> bool:
    return any(describe_option(option) is not None for option in packet.tcp.options)


@dataclass
class Subflow:
    """One TCP subflow as the prober sees it (absolute sequence numbers)."""

    local: str
    local_port: int
    remote: str
    remote_port: int
    isn: int
    snd_nxt: int = 0
    peer_isn: int | None = None
    rcv_nxt: int = 0
    acked: int = 0  # the highest ACK number we sent
    address_id: int = 0
    nonce: int = 0
    received: bytearray = field(default_factory=bytearray)  # in-order payload from the target
    inbox: deque[Packet] = field(default_factory=deque)
    name: str = "sf0"

    def relative_out(self, seq: int) -> int:
        return (seq - self.isn) & U32

    def relative_in(self, seq: int) -> int:
        return (seq - self.peer_isn) & U32 if self.peer_isn is not None else seq


_ports = itertools.count(0)
PROBER_PORTS = (40000, 40999)  # all guarded in the prober's host
LISTEN_PORT = 40999  # where the prober waits for a target acting as client


def next_port() -> int:
    """A fresh prober port for every subflow (the guard drops the kernel's view of them)."""
    low, high = PROBER_PORTS
    return low + next(_ports) % (high - low)


class Session:
    """One MPTCP connection driven by a probe script."""

    def __init__(self, link: Link, local: str, remote: str, port: int, *,
                 rng: random.Random, budget_s: float = 15.0) -> None:
        self.link = link
        self.rng = rng
        self.local_key = rng.getrandbits(64)
        self.remote_key: int | None = None
        self.checksums = False
        self.remote = remote
        self.port = port
        self.subflows: list[Subflow] = []
        self.trace: list[str] = []
        self.trace_dropped = 0
        self.started = link.now()
        self.deadline = time.monotonic() + budget_s
        self.budget_s = budget_s
        self.unclaimed: deque[Packet] = deque()  # SYNs to LISTEN_PORT of no subflow yet
        self.foreign = 0  # packets for none of this session's subflows
        self.data_seq = 0  # bytes of data-level sequence space we used after the IDSN
        self.peer_data_received = 0  # in-order data-level bytes taken from the target
        self.initial = self.new_subflow(local)

    # --- values ------------------------------------------------------------------------------
    @property
    def local_token(self) -> int:
        return key_to_token(self.local_key)

    @property
    def remote_token(self) -> int:
        assert self.remote_key is not None
        return key_to_token(self.remote_key)

    @property
    def local_idsn(self) -> int:
        return key_to_idsn(self.local_key)

    @property
    def remote_idsn(self) -> int:
        assert self.remote_key is not None
        return key_to_idsn(self.remote_key)

    def dsn(self, offset: int = 0) -> int:
        """The DSN of our next data byte (+ offset)."""
        return (self.local_idsn + 1 + self.data_seq + offset) & U64

    def data_ack_value(self) -> int:
        """The data ACK acknowledging everything the target sent us in order."""
        return (self.remote_idsn + 1 + self.peer_data_received) & U64

    def relative_dsn(self, value: int, ours: bool) -> int:
        base = self.local_idsn if ours else self.remote_idsn
        return (value - base) & U64

    # --- trace ---------------------------------------------------------------------------------
    def note(self, text: str) -> None:
        self._line(f"{self.link.now() - self.started:7.3f}   # {text}")

    def _line(self, line: str) -> None:
        if len(self.trace) < TRACE_LIMIT:
            self.trace.append(line)
        else:
            self.trace_dropped += 1

    def _record(self, packet: Packet, sub: Subflow | None, outgoing: bool) -> None:
        tcp = packet.tcp
        name = sub.name if sub else "?"
        if sub is None:
            seq, ack = tcp.seq, tcp.ack
        elif outgoing:
            seq, ack = sub.relative_out(tcp.seq), sub.relative_in(tcp.ack)
        else:
            seq, ack = sub.relative_in(tcp.seq), sub.relative_out(tcp.ack)
        options = [text for option in tcp.options if (text := self._option_text(option))]
        arrow = ">" if outgoing else "<"
        length = f" len={len(tcp.payload)}" if tcp.payload else ""
        ack_text = f" ack={ack}" if tcp.flags & ACK else ""
        self._line(f"{self.link.now() - self.started:7.3f} {arrow} {name} {_flags(tcp.flags):3} "
                   f"seq={seq}{ack_text}{length}" + (f" <{'; '.join(options)}>" if options else ""))

    def _option_text(self, option: TcpOption) -> str | None:
        text = describe_option(option)
        if text is None or self.remote_key is None or not isinstance(option, Dss):
            return text
        return text  # absolute values: relative ones are derived in the notes where needed

    # --- subflows --------------------------------------------------------------------------------
    def new_subflow(self, local: str, remote: str | None = None) -> Subflow:
        isn = self.rng.getrandbits(32)
        sub = Subflow(local=local, local_port=next_port(), remote=remote or self.remote,
                      remote_port=self.port, isn=isn, snd_nxt=isn,
                      name=f"sf{len(self.subflows)}", nonce=self.rng.getrandbits(32))
        self.subflows.append(sub)
        return sub

    def _owner(self, packet: Packet) -> Subflow | None:
        for sub in self.subflows:
            if (packet.src == sub.remote and packet.dst == sub.local
                    and packet.tcp.src_port == sub.remote_port and packet.tcp.dst_port == sub.local_port):
                return sub
        return None

    # --- sending -----------------------------------------------------------------------------------
    def segment(self, sub: Subflow, flags: int, options: list[TcpOption] | None = None,
                payload: bytes = b"", *, seq: int | None = None, ack: int | None = None) -> Packet:
        """Build and send one segment; data and SYN/FIN advance snd_nxt (unless seq is given)."""
        use_seq = sub.snd_nxt if seq is None else seq
        use_ack = sub.rcv_nxt if ack is None else ack
        tcp = TcpSegment(src_port=sub.local_port, dst_port=sub.remote_port, seq=use_seq & U32,
                         ack=use_ack & U32 if flags & ACK else 0, flags=flags, window=WINDOW,
                         options=list(options or []), payload=payload)
        packet = Packet(src=sub.local, dst=sub.remote, tcp=tcp)
        if flags & ACK:
            sub.acked = tcp.ack
        if seq is None:
            sub.snd_nxt = (sub.snd_nxt + len(payload) + (1 if flags & (SYN | FIN) else 0)) & U32
        self._record(packet, sub, outgoing=True)
        self.link.send(packet)
        return packet

    def ack(self, sub: Subflow, options: list[TcpOption] | None = None) -> Packet:
        return self.segment(sub, ACK, options)

    def dss_ack(self) -> Dss:
        """A DSS carrying only our data ACK."""
        return Dss(data_ack=self.data_ack_value())

    def mapping(self, sub: Subflow, length: int, *, dsn: int | None = None, payload: bytes = b"",
                data_fin: bool = False, subflow_seq: int | None = None,
                checksum: int | None = None, with_ack: bool = True) -> Dss:
        """A DSS mapping for `length` bytes at our next DSN (or `dsn`) and subflow position."""
        use_dsn = self.dsn() if dsn is None else dsn
        ssn = sub.relative_out(sub.snd_nxt) if subflow_seq is None else subflow_seq
        data_len = length + (1 if data_fin else 0)
        if checksum is None and self.checksums:
            checksum = dss_checksum(use_dsn, ssn, data_len, payload)
        return Dss(data_ack=self.data_ack_value() if with_ack and self.remote_key is not None else None,
                   dsn=use_dsn, subflow_seq=ssn, data_len=data_len, checksum=checksum,
                   data_fin=data_fin)

    def send_data(self, sub: Subflow, payload: bytes, *, extra: list[TcpOption] | None = None,
                  **mapping: object) -> Packet:
        """One data segment with its own mapping at the next DSN; advances the DSN space."""
        dss = self.mapping(sub, len(payload), payload=payload, **mapping)  # type: ignore[arg-type]
        packet = self.segment(sub, ACK | PSH, [dss, *(extra or [])], payload)
        if dss.dsn == self.dsn():
            self.data_seq += len(payload) + (1 if dss.data_fin else 0)
        return packet

    def reset_all(self) -> None:
        """End every subflow with a plain RST: the target drops its connection state."""
        for sub in self.subflows:
            if sub.peer_isn is not None:
                self.segment(sub, RST | ACK)

    # --- receiving ---------------------------------------------------------------------------------
    def _pull(self, timeout_s: float) -> bool:
        """Move one packet from the link into its subflow's inbox; False on timeout."""
        if time.monotonic() > self.deadline:
            raise ProbeTimeout(f"the probe ran past its {self.budget_s:.0f} s budget")
        packet = self.link.receive(timeout_s)
        if packet is None:
            return False
        sub = self._owner(packet)
        if sub is not None:
            self._take(sub, packet)
            self._record(packet, sub, outgoing=False)
            sub.inbox.append(packet)
        elif packet.tcp.flags & SYN and not packet.tcp.flags & ACK and packet.tcp.dst_port == LISTEN_PORT:
            self._record(packet, None, outgoing=False)
            self.unclaimed.append(packet)
        else:  # another connection's late segment (an earlier probe's): not evidence
            self.foreign += 1
        return True

    def _take(self, sub: Subflow, packet: Packet) -> None:
        """Track the target's in-order payload on this subflow (for our ACKs)."""
        tcp = packet.tcp
        if tcp.flags & SYN and tcp.flags & ACK and sub.peer_isn is None:
            sub.peer_isn = tcp.seq
            sub.rcv_nxt = (tcp.seq + 1) & U32
            return
        in_order = tcp.seq == sub.rcv_nxt
        if tcp.payload and in_order:
            sub.rcv_nxt = (sub.rcv_nxt + len(tcp.payload)) & U32
            sub.received += tcp.payload
        dss = tcp.find(Dss)
        if self.remote_key is None or not in_order:
            pass
        elif isinstance(dss, Dss) and dss.dsn is not None and dss.data_len:
            self._take_mapping(dss)
        elif tcp.payload and not isinstance(dss, Dss):  # after a fallback: plain TCP bytes
            self.peer_data_received += len(tcp.payload)
        if tcp.flags & FIN and (tcp.seq + len(tcp.payload)) & U32 == sub.rcv_nxt:
            sub.rcv_nxt = (sub.rcv_nxt + 1) & U32

    def _take_mapping(self, dss: Dss) -> None:
        """Advance the data ACK over a mapping that starts at or before it (the same data
        may come again on another subflow: counted once, by DSN)."""
        assert dss.dsn is not None and dss.data_len is not None
        base = (self.remote_idsn + 1) & U64
        if dss.dsn_64:
            start = (dss.dsn - base) & U64
        else:  # the 32-bit DSN nearest to what we have
            start = self.peer_data_received + ((((dss.dsn - base) & U32) - self.peer_data_received
                                                + (1 << 31)) & U32) - (1 << 31)
        end = start + dss.data_len
        if start <= self.peer_data_received < end:
            self.peer_data_received = end

    def expect(self, sub: Subflow, match: Callable[[Packet], bool] | None = None,
               timeout_s: float = 1.0) -> Packet | None:
        """The first packet on `sub` that `match` accepts, within `timeout_s` of link time;
        packets that do not match are consumed (they stay in the trace)."""
        end = self.link.now() + timeout_s
        while True:
            while sub.inbox:
                packet = sub.inbox.popleft()
                if match is None or match(packet):
                    return packet
            left = end - self.link.now()
            if left <= 0 or not self._pull(left):
                return None

    def collect(self, timeout_s: float) -> list[Packet]:
        """Everything that arrives for any subflow within `timeout_s` (consumed)."""
        end = self.link.now() + timeout_s
        seen: list[Packet] = []
        while True:
            for sub in self.subflows:
                seen.extend(sub.inbox)
                sub.inbox.clear()
            left = end - self.link.now()
            if left <= 0 or not self._pull(left):
                for sub in self.subflows:
                    seen.extend(sub.inbox)
                    sub.inbox.clear()
                return seen

    # --- common exchanges ----------------------------------------------------------------------------
    def syn(self, options: list[TcpOption], sub: Subflow | None = None) -> Packet | None:
        """Send a SYN with `options` (MSS added) and return the SYN/ACK or RST answering it."""
        sub = sub or self.initial
        self.segment(sub, SYN, [MaximumSegmentSize(1460), *options])
        return self.expect(sub, lambda p: bool(p.tcp.flags & (SYN | RST)), timeout_s=2.0)

    def mp_capable_syn(self, flags: int = MPCAPABLE_FLAG_HMAC_SHA256, version: int = 1) -> Packet | None:
        if version == 0:  # the RFC 6824 layout: 12 bytes with the sender's key
            option: TcpOption = UnknownMptcp(0, bytes((0x00, flags)) + self.local_key.to_bytes(8, "big"))
        else:
            option = MpCapable(version=version, flags=flags)
        return self.syn([option])

    def third_ack_options(self, flags: int = MPCAPABLE_FLAG_HMAC_SHA256) -> list[TcpOption]:
        assert self.remote_key is not None
        return [MpCapable(version=1, flags=flags, sender_key=self.local_key,
                          receiver_key=self.remote_key)]

    def connect(self, *, flags: int = MPCAPABLE_FLAG_HMAC_SHA256, third_ack: bool = True) -> Packet:
        """The MP_CAPABLE handshake; raises TargetSilent/NotMptcp-style errors via the caller.

        Returns the SYN/ACK. The target's checksum wish (A) is honoured from here on.
        """
        synack = self.mp_capable_syn(flags)
        if synack is None:
            raise TargetSilent("no answer to an MP_CAPABLE SYN")
        mpc = synack.tcp.find(MpCapable)
        if not synack.tcp.flags & SYN or not isinstance(mpc, MpCapable) or mpc.sender_key is None:
            raise NoMptcp(f"the SYN/ACK has no MP_CAPABLE with a key ({self.trace[-1].strip()})")
        self.remote_key = mpc.sender_key
        self.checksums = bool((mpc.flags | flags) & 0x80)
        if third_ack:
            self.ack(self.initial, self.third_ack_options(flags))
        return synack

    def first_data(self, payload: bytes, flags: int = MPCAPABLE_FLAG_HMAC_SHA256) -> Packet:
        """Data with MP_CAPABLE + data-level length (RFC 8684 3.1: keys repeated until a DSS)."""
        assert self.remote_key is not None
        checksum = None
        if self.checksums:
            checksum = dss_checksum(self.dsn(), 1, len(payload), payload)
        option = MpCapable(version=1, flags=flags, sender_key=self.local_key,
                           receiver_key=self.remote_key, data_len=len(payload), checksum=checksum)
        packet = self.segment(self.initial, ACK | PSH, [option], payload)
        self.data_seq += len(payload)
        return packet

    def join(self, local: str, *, backup: bool = False, address_id: int = 1,
             token: int | None = None) -> tuple[Subflow, Packet | None]:
        """A MP_JOIN SYN on a new subflow from `local`; returns it and the answer."""
        sub = self.new_subflow(local)
        sub.address_id = address_id
        option = MpJoinSyn(backup=backup, address_id=address_id,
                           receiver_token=self.remote_token if token is None else token,
                           sender_nonce=sub.nonce)
        return sub, self.syn([option], sub)

    def join_ack_hmac(self, sub: Subflow, synack: Packet) -> bytes:
        join = synack.tcp.find(MpJoinSynAck)
        assert isinstance(join, MpJoinSynAck) and self.remote_key is not None
        return join_ack_hmac(self.local_key, self.remote_key, sub.nonce, join.sender_nonce)

    # --- the target as client: the prober answers its SYNs ------------------------------------
    def expect_syn(self, match: Callable[[Packet], bool], timeout_s: float = 3.0) -> Packet | None:
        """The next SYN to the prober's listening port, of no subflow yet, that `match` takes."""
        end = self.link.now() + timeout_s
        while True:
            while self.unclaimed:
                packet = self.unclaimed.popleft()
                if match(packet):
                    return packet
            left = end - self.link.now()
            if left <= 0 or not self._pull(left):
                return None

    def accept(self, syn: Packet, *, initial: bool = False) -> Subflow:
        """A subflow for the target's SYN (the SYN/ACK is the script's to send); with
        `initial` it becomes the connection's first subflow."""
        if initial and self.initial.peer_isn is None and self.initial.snd_nxt == self.initial.isn:
            self.subflows.remove(self.initial)
        sub = Subflow(local=syn.dst, local_port=syn.tcp.dst_port, remote=syn.src,
                      remote_port=syn.tcp.src_port, isn=self.rng.getrandbits(32),
                      peer_isn=syn.tcp.seq, rcv_nxt=(syn.tcp.seq + 1) & U32,
                      name=f"sf{len(self.subflows)}", nonce=self.rng.getrandbits(32))
        sub.snd_nxt = sub.isn
        self.subflows.append(sub)
        if initial:
            self.initial = sub
        self._line(f"{self.link.now() - self.started:7.3f}   # {sub.name}: the target's SYN "
                   f"from {syn.src}:{syn.tcp.src_port} (listed above as ?)")
        return sub

    def synack(self, sub: Subflow, options: list[TcpOption]) -> Packet:
        return self.segment(sub, SYN | ACK, [MaximumSegmentSize(1460), *options])

    def data_acked(self, sub: Subflow, upto: int, timeout_s: float = 1.0) -> Packet | None:
        """The first segment whose data ACK reaches `upto` (a DSN)."""
        def reached(packet: Packet) -> bool:
            dss = packet.tcp.find(Dss)
            return isinstance(dss, Dss) and dss.data_ack is not None and _dsn_at_least(
                dss.data_ack, upto, dss.data_ack_64)
        return self.expect(sub, reached, timeout_s)


class NoMptcp(Exception):
    """The target answered an MP_CAPABLE SYN without MP_CAPABLE: it does not speak MPTCP v1."""


def _dsn_at_least(value: int, wanted: int, is_64: bool) -> bool:
    if not is_64:
        return ((value - (wanted & U32)) & U32) < (1 << 31)
    return ((value - wanted) & U64) < (1 << 63)


def dsn_at_least(value: int, wanted: int, is_64: bool = True) -> bool:
    """value >= wanted in sequence space (32-bit values compare with the low half)."""
    return _dsn_at_least(value, wanted, is_64)
