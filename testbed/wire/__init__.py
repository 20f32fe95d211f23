"""testbed.wire: the one packet codec (IPv4, TCP, TCP options, MPTCP v1 options, checksums).

Everything that looks inside a packet goes through here: `decode_packet` / `encode_packet` for
whole IPv4+TCP packets, `decode_tcp` / `encode_tcp` for segments, `decode_options` /
`encode_options` / `encoded_length` for option lists, `crypto` for the MPTCP values derived
from keys. Malformed input raises `WireError` naming the field; nothing else escapes.

IPv6: `decode_packet_v6` / `encode_packet_v6` for IPv6+TCP packets (extension headers walked
and kept, see testbed/wire/ipv6.py), `decode_ip_packet` / `encode_ip_packet` for either family.
"""

from testbed.wire.checksum import (
    checksum_adjust,
    checksum_adjust_u16,
    checksum_adjust_u32,
    dss_checksum,
    internet_checksum,
    ipv4_header_checksum,
    ones_complement_sum,
    pseudo_header_sum,
    tcp_checksum,
)
from testbed.wire.crypto import (
    add_addr_hmac,
    hmac_sha256,
    join_ack_hmac,
    join_synack_hmac,
    key_to_idsn,
    key_to_token,
)
from testbed.wire.errors import WireError
from testbed.wire.ipv4 import (
    Ipv4Header,
    decode_ipv4,
    decode_packet,
    encode_packet,
    encode_packet_reusing_payload,
    verify_checksums,
)
from testbed.wire.ipv6 import (
    Ipv6Extension,
    Ipv6Header,
    Ipv6Packet,
    decode_ip_packet,
    decode_ipv6,
    decode_packet_v6,
    encode_ip_packet,
    encode_packet_v6,
    verify_checksums_v6,
)
from testbed.wire.mptcp_options import (
    MPTCP_CODECS,
    decode_mptcp,
    encode_mptcp,
)
from testbed.wire.tcp import decode_tcp, encode_tcp, verify_tcp_checksum
from testbed.wire.tcp_options import (
    MAX_OPTIONS_LENGTH,
    decode_options,
    encode_options,
    encoded_length,
    options_length,
)
from testbed.wire.types import (
    ACK,
    CWR,
    ECE,
    FIN,
    IPPROTO_TCP,
    MPCAPABLE_FLAG_CHECKSUM,
    MPCAPABLE_FLAG_EXTENSIBILITY,
    MPCAPABLE_FLAG_HMAC_SHA256,
    MPCAPABLE_FLAG_NO_MORE_SUBFLOWS,
    MPTCPRST_ADMIN_PROHIBITED,
    MPTCPRST_LACK_OF_RESOURCES,
    MPTCPRST_MIDDLEBOX_INTERFERENCE,
    MPTCPRST_MPTCP_ERROR,
    MPTCPRST_TOO_MUCH_OUTSTANDING,
    MPTCPRST_UNACCEPTABLE_PERFORMANCE,
    MPTCPRST_UNSPECIFIED,
    PSH,
    RST,
    SYN,
    TCPOPT_MPTCP,
    URG,
    AddAddr,
    Dss,
    EndOfOptions,
    MaximumSegmentSize,
    MpCapable,
    MpFail,
    MpFastclose,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    MpPrio,
    MptcpOption,
    MpTcpRst,
    NoOperation,
    Packet,
    RemoveAddr,
    Sack,
    SackPermitted,
    TcpOption,
    TcpSegment,
    Timestamps,
    UnknownMptcp,
    UnknownOption,
    WindowScale,
)

__all__ = [
    "ACK", "CWR", "ECE", "FIN", "IPPROTO_TCP", "MAX_OPTIONS_LENGTH", "MPCAPABLE_FLAG_CHECKSUM",
    "MPCAPABLE_FLAG_EXTENSIBILITY", "MPCAPABLE_FLAG_HMAC_SHA256",
    "MPCAPABLE_FLAG_NO_MORE_SUBFLOWS", "MPTCPRST_ADMIN_PROHIBITED", "MPTCPRST_LACK_OF_RESOURCES",
    "MPTCPRST_MIDDLEBOX_INTERFERENCE", "MPTCPRST_MPTCP_ERROR", "MPTCPRST_TOO_MUCH_OUTSTANDING",
    "MPTCPRST_UNACCEPTABLE_PERFORMANCE", "MPTCPRST_UNSPECIFIED", "MPTCP_CODECS", "PSH", "RST",
    "SYN", "TCPOPT_MPTCP", "URG", "AddAddr", "Dss", "EndOfOptions", "Ipv4Header",
    "MaximumSegmentSize", "MpCapable", "MpFail", "MpFastclose", "MpJoinAck", "MpJoinSyn",
    "MpJoinSynAck", "MpPrio", "MpTcpRst", "MptcpOption", "NoOperation", "Packet", "RemoveAddr",
    "Sack", "SackPermitted", "TcpOption", "TcpSegment", "Timestamps", "UnknownMptcp",
    "UnknownOption", "WindowScale", "WireError", "add_addr_hmac", "checksum_adjust",
    "checksum_adjust_u16", "checksum_adjust_u32", "decode_ipv4", "decode_mptcp",
    "decode_options", "decode_packet", "decode_tcp", "dss_checksum", "encode_mptcp",
    "encode_options", "encode_packet", "encode_packet_reusing_payload", "encode_tcp",
    "encoded_length", "hmac_sha256",
    "internet_checksum", "ipv4_header_checksum", "join_ack_hmac", "join_synack_hmac",
    "key_to_idsn", "key_to_token", "ones_complement_sum", "options_length", "pseudo_header_sum",
    "tcp_checksum", "verify_checksums", "verify_tcp_checksum",
]
__all__ += [
    "Ipv6Extension", "Ipv6Header", "Ipv6Packet", "decode_ip_packet", "decode_ipv6",
    "decode_packet_v6", "encode_ip_packet", "encode_packet_v6", "verify_checksums_v6",
]
