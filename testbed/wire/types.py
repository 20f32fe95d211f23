"""Decoded packet values shared by the stack, the middleboxes, the simulator and the analysis.

These are the contract of `testbed.wire`: every module that looks inside a packet uses these
classes, and only `testbed.wire` turns them into bytes and back. Option classes are frozen so
that a packet can be copied cheaply (`dataclasses.replace`) without aliasing surprises; the
segment and packet containers are mutable because middleboxes edit them in place.

Sequence numbers, keys and DSNs are plain unsigned integers of their wire width.
Addresses are dotted-quad (IPv4) or RFC 5952 (IPv6) strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# --- TCP flags (header byte 13, plus the NS bit is not used) ---------------------------------
FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

IPPROTO_TCP = 6
TCPOPT_MPTCP = 30


# --- Plain TCP options --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EndOfOptions:
    """Kind 0: ends the option list; the rest of the option space is padding."""


@dataclass(frozen=True, slots=True)
class NoOperation:
    """Kind 1: one byte of alignment padding."""


@dataclass(frozen=True, slots=True)
class MaximumSegmentSize:
    """Kind 2 (SYN only)."""

    mss: int


@dataclass(frozen=True, slots=True)
class WindowScale:
    """Kind 3 (SYN only): shift count 0..14."""

    shift: int


@dataclass(frozen=True, slots=True)
class SackPermitted:
    """Kind 4 (SYN only)."""


@dataclass(frozen=True, slots=True)
class Sack:
    """Kind 5: up to four (left, right) edge pairs, right edge exclusive."""

    blocks: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Timestamps:
    """Kind 8 (RFC 7323)."""

    tsval: int
    tsecr: int


@dataclass(frozen=True, slots=True)
class UnknownOption:
    """Any kind this codec does not interpret; kept byte-exact so it can be forwarded."""

    kind: int
    data: bytes


# --- MPTCP v1 options (kind 30, RFC 8684) --------------------------------------------------
MPCAPABLE_FLAG_CHECKSUM = 0x80  # A
MPCAPABLE_FLAG_EXTENSIBILITY = 0x40  # B
MPCAPABLE_FLAG_NO_MORE_SUBFLOWS = 0x20  # C
MPCAPABLE_FLAG_HMAC_SHA256 = 0x01  # H


@dataclass(frozen=True, slots=True)
class MpCapable:
    """MP_CAPABLE in its four forms, told apart by which fields are present (and so by length):

    SYN: no key (4 bytes); SYN/ACK: sender_key (12); third ACK: both keys (20);
    first data: both keys + data_len (22), + checksum (24).
    """

    version: int = 1
    flags: int = MPCAPABLE_FLAG_HMAC_SHA256
    sender_key: int | None = None
    receiver_key: int | None = None
    data_len: int | None = None
    checksum: int | None = None


@dataclass(frozen=True, slots=True)
class MpJoinSyn:
    """MP_JOIN on SYN (12 bytes)."""

    backup: bool
    address_id: int
    receiver_token: int
    sender_nonce: int


@dataclass(frozen=True, slots=True)
class MpJoinSynAck:
    """MP_JOIN on SYN/ACK (16 bytes): leftmost 64 bits of the responder's HMAC."""

    backup: bool
    address_id: int
    sender_truncated_hmac: int
    sender_nonce: int


@dataclass(frozen=True, slots=True)
class MpJoinAck:
    """MP_JOIN on the third ACK (24 bytes): leftmost 160 bits of the initiator's HMAC."""

    sender_hmac: bytes


@dataclass(frozen=True, slots=True)
class Dss:
    """Data Sequence Signal. Absent parts are None.

    data_ack / data_ack_64: the data ACK and whether it is sent as 64 bits.
    dsn / dsn_64 / subflow_seq / data_len / checksum: the mapping (subflow_seq relative to the
    subflow ISN, first payload byte = 1); checksum only when checksums were negotiated.
    data_fin: the F flag (DATA_FIN consumes one DSN, counted in data_len).
    """

    data_ack: int | None = None
    data_ack_64: bool = True
    dsn: int | None = None
    dsn_64: bool = True
    subflow_seq: int | None = None
    data_len: int | None = None
    checksum: int | None = None
    data_fin: bool = False


@dataclass(frozen=True, slots=True)
class AddAddr:
    """ADD_ADDR v1: echo (E flag) carries no HMAC; port and hmac are optional."""

    address_id: int
    address: str
    port: int | None = None
    hmac: int | None = None
    echo: bool = False


@dataclass(frozen=True, slots=True)
class RemoveAddr:
    address_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class MpPrio:
    """MP_PRIO: sets the backup bit of the subflow it is sent on (address_id optional, legacy)."""

    backup: bool
    address_id: int | None = None


@dataclass(frozen=True, slots=True)
class MpFail:
    dsn: int


@dataclass(frozen=True, slots=True)
class MpFastclose:
    receiver_key: int


MPTCPRST_UNSPECIFIED = 0
MPTCPRST_MPTCP_ERROR = 1
MPTCPRST_LACK_OF_RESOURCES = 2
MPTCPRST_ADMIN_PROHIBITED = 3
MPTCPRST_TOO_MUCH_OUTSTANDING = 4
MPTCPRST_UNACCEPTABLE_PERFORMANCE = 5
MPTCPRST_MIDDLEBOX_INTERFERENCE = 6


@dataclass(frozen=True, slots=True)
class MpTcpRst:
    reason: int
    transient: bool = False
    flags: int = 0  # the other three flag bits (reserved), kept for byte-exact round trips


@dataclass(frozen=True, slots=True)
class UnknownMptcp:
    """An MPTCP subtype this codec does not interpret (or version 0), kept byte-exact."""

    subtype: int
    data: bytes


MptcpOption = (
    MpCapable | MpJoinSyn | MpJoinSynAck | MpJoinAck | Dss | AddAddr | RemoveAddr | MpPrio | MpFail
    | MpFastclose | MpTcpRst | UnknownMptcp
)
TcpOption = (
    EndOfOptions | NoOperation | MaximumSegmentSize | WindowScale | SackPermitted | Sack | Timestamps
    | UnknownOption | MptcpOption
)


@dataclass(slots=True)
class TcpSegment:
    """A TCP header and payload. `checksum` is what was received (None when building)."""

    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int
    options: list[TcpOption] = field(default_factory=list)
    payload: bytes = b""
    urgent: int = 0
    checksum: int | None = None

    def find(self, option_type: type) -> TcpOption | None:
        """The first option of that type, or None."""
        for option in self.options:
            if type(option) is option_type:
                return option
        return None


@dataclass(slots=True)
class Packet:
    """An IPv4 packet carrying TCP: the unit the stack, the simulator and middleboxes exchange.

    Ownership rule: whoever receives a Packet owns it and may edit it; a sender must not keep a
    reference to a Packet it handed out (retransmissions are rebuilt from the sender's state).
    """

    src: str
    dst: str
    tcp: TcpSegment
    ttl: int = 64
    ident: int = 0
    tos: int = 0
    dont_fragment: bool = True
