"""Names for TCP/MPTCP options and for kinds of packets, as the middlebox specs spell them.

Real middleboxes decide by coarse facts: "is this a SYN", "is this the first data segment",
"do I know this option kind". This module gives those facts one spelling for every spec
(strip_options, syn_firewall, the drop/delay predicates) so that `mp_join` or `first_data`
means the same thing everywhere, and it keeps the small per-flow memory needed to tell the
first data segment (and its retransmissions) from later ones.
"""

from __future__ import annotations

from middleboxes.contract import Direction
from middleboxes.flows import FlowKey, flow_key
from testbed.wire import types as wire
from testbed.wire.types import ACK, FIN, RST, SYN, Packet, TcpOption

# Option class -> spec name. MP_JOIN's three forms share one name, as a box would see them.
OPTION_NAMES: dict[type, str] = {
    wire.EndOfOptions: "eol",
    wire.NoOperation: "nop",
    wire.MaximumSegmentSize: "mss",
    wire.WindowScale: "window_scale",
    wire.SackPermitted: "sack_permitted",
    wire.Sack: "sack",
    wire.Timestamps: "timestamps",
    wire.UnknownOption: "unknown_tcp",
    wire.MpCapable: "mp_capable",
    wire.MpJoinSyn: "mp_join",
    wire.MpJoinSynAck: "mp_join",
    wire.MpJoinAck: "mp_join",
    wire.Dss: "dss",
    wire.AddAddr: "add_addr",
    wire.RemoveAddr: "remove_addr",
    wire.MpPrio: "mp_prio",
    wire.MpFail: "mp_fail",
    wire.MpFastclose: "mp_fastclose",
    wire.MpTcpRst: "mp_tcprst",
    wire.UnknownMptcp: "mptcp_unknown",
}

MPTCP_OPTION_TYPES: frozenset[type] = frozenset({
    wire.MpCapable, wire.MpJoinSyn, wire.MpJoinSynAck, wire.MpJoinAck, wire.Dss, wire.AddAddr,
    wire.RemoveAddr, wire.MpPrio, wire.MpFail, wire.MpFastclose, wire.MpTcpRst,
    wire.UnknownMptcp,
})

# What a box built for RFC 793/2018/7323 TCP understands; everything else is "unknown" to it.
CLASSIC_TCP_OPTION_TYPES: frozenset[type] = frozenset({
    wire.EndOfOptions, wire.NoOperation, wire.MaximumSegmentSize, wire.WindowScale,
    wire.SackPermitted, wire.Sack, wire.Timestamps,
})

MPTCP_SUBTYPE_NAMES: tuple[str, ...] = (
    "mp_capable", "mp_join", "dss", "add_addr", "remove_addr", "mp_prio", "mp_fail",
    "mp_fastclose", "mp_tcprst", "mptcp_unknown",
)
TCP_OPTION_NAMES: tuple[str, ...] = (
    "eol", "nop", "mss", "window_scale", "sack_permitted", "sack", "timestamps", "unknown_tcp",
)
# Groups usable wherever a set of options is named.
OPTION_GROUPS: dict[str, frozenset[type]] = {
    "mptcp": MPTCP_OPTION_TYPES,
    "unknown": frozenset(OPTION_NAMES) - CLASSIC_TCP_OPTION_TYPES,
}


def option_name(option: TcpOption) -> str:
    return OPTION_NAMES[type(option)]


def option_types_named(names: tuple[str, ...]) -> frozenset[type]:
    """The option classes selected by a list of option names and groups."""
    selected: set[type] = set()
    for name in names:
        if name in OPTION_GROUPS:
            selected |= OPTION_GROUPS[name]
        else:
            selected |= {cls for cls, cls_name in OPTION_NAMES.items() if cls_name == name}
    return frozenset(selected)


# --- Packet classes ------------------------------------------------------------------------
PACKET_CLASSES: tuple[str, ...] = (
    "syn", "synack", "first_data", "data", "pure_ack", "fin", "rst",
)


def packet_classes(flags: int, has_payload: bool) -> frozenset[str]:
    """The classes that need no per-flow memory (all but `first_data`): what the inline fast
    path computes from raw header bytes, and PacketClassifier's starting point."""
    classes: set[str] = set()
    if flags & SYN:
        classes.add("synack" if flags & ACK else "syn")
        if has_payload:
            classes.add("data")
    elif has_payload:
        classes.add("data")
    elif flags & ACK and not flags & (FIN | RST):
        classes.add("pure_ack")
    if flags & FIN:
        classes.add("fin")
    if flags & RST:
        classes.add("rst")
    return frozenset(classes)


class PacketClassifier:
    """Tells which of PACKET_CLASSES a packet belongs to (several can apply at once).

    syn: SYN without ACK; synack: SYN+ACK; data: carries payload (not a SYN); first_data: the
    first data segment of its flow in its direction, and any retransmission starting at the
    same sequence number (MPTCP repeats MP_CAPABLE there); pure_ack: ACK without payload,
    SYN, FIN or RST (this includes the handshake's third ACK); fin; rst.
    Call `classify` on every packet the middlebox sees so first-data tracking stays right.
    """

    def __init__(self) -> None:
        self._first_data_seq: dict[tuple[FlowKey, Direction], int] = {}

    def classify(self, packet: Packet, direction: Direction) -> frozenset[str]:
        tcp = packet.tcp
        classes = packet_classes(tcp.flags, bool(tcp.payload))
        if tcp.payload and not tcp.flags & SYN:
            key = (flow_key(packet, direction), direction)
            if self._first_data_seq.setdefault(key, tcp.seq) == tcp.seq:
                return classes | {"first_data"}
        return classes

    def forget(self, key: FlowKey) -> None:
        for direction in Direction:
            self._first_data_seq.pop((key, direction), None)
