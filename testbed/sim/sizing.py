"""On-the-wire size of a Packet, for link serialization when the codec is not run per hop.

The benchmark (and any run with `codec=False`) needs packet sizes without paying for
`encode_packet`. This estimate follows the option lengths of RFC 8684 section 3 (also in
PROTOCOL-NOTES.md); with the codec on, the simulator uses the exact encoded length instead.
It only sizes options, it never parses bytes.
"""

from __future__ import annotations

from collections.abc import Callable

from testbed.wire import types as t

IPV4_HEADER = 20
IPV6_HEADER = 40
TCP_HEADER = 20


def _mp_capable_length(option: t.MpCapable) -> int:
    if option.sender_key is None:
        return 4
    if option.receiver_key is None:
        return 12
    if option.data_len is None:
        return 20
    return 24 if option.checksum is not None else 22


def _dss_length(option: t.Dss) -> int:
    length = 4
    if option.data_ack is not None:
        length += 8 if option.data_ack_64 else 4
    if option.dsn is not None:
        length += 14 if option.dsn_64 else 10
        if option.checksum is not None:
            length += 2
    return length


def _add_addr_length(option: t.AddAddr) -> int:
    length = 8 if ":" not in option.address else 20
    if option.port is not None:
        length += 2
    if option.hmac is not None:
        length += 8
    return length


_FIXED: dict[type, int] = {
    t.EndOfOptions: 1,
    t.NoOperation: 1,
    t.MaximumSegmentSize: 4,
    t.WindowScale: 3,
    t.SackPermitted: 2,
    t.Timestamps: 10,
    t.MpJoinSyn: 12,
    t.MpJoinSynAck: 16,
    t.MpJoinAck: 24,
    t.MpFail: 12,
    t.MpFastclose: 12,
    t.MpTcpRst: 4,
}

_COMPUTED: dict[type, Callable[[object], int]] = {
    t.MpCapable: _mp_capable_length,  # type: ignore[dict-item]
    t.Dss: _dss_length,  # type: ignore[dict-item]
    t.AddAddr: _add_addr_length,  # type: ignore[dict-item]
    t.Sack: lambda option: 2 + 8 * len(option.blocks),  # type: ignore[attr-defined]
    t.UnknownOption: lambda option: 2 + len(option.data),  # type: ignore[attr-defined]
    t.UnknownMptcp: lambda option: 3 + len(option.data),  # type: ignore[attr-defined]
    t.RemoveAddr: lambda option: 3 + len(option.address_ids),  # type: ignore[attr-defined]
    t.MpPrio: lambda option: 3 if option.address_id is None else 4,  # type: ignore[attr-defined]
}


def option_length(option: object) -> int:
    """Bytes the option takes on the wire, kind and length bytes included."""
    fixed = _FIXED.get(type(option))
    if fixed is not None:
        return fixed
    computed = _COMPUTED.get(type(option))
    if computed is None:
        raise TypeError(f"sizing: unknown TCP option type {type(option).__name__}")
    return computed(option)


def packet_size(packet: t.Packet) -> int:
    """IP + TCP header + options (padded to 32-bit words) + payload, in bytes."""
    segment = packet.tcp
    options = 0
    for option in segment.options:
        options += option_length(option)
    options = (options + 3) & ~3
    ip_header = IPV6_HEADER if ":" in packet.dst else IPV4_HEADER
    return ip_header + TCP_HEADER + options + len(segment.payload)
