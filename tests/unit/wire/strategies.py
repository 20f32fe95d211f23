"""Hypothesis strategies for every value the codec handles (shared by the wire tests)."""

from __future__ import annotations

from hypothesis import strategies as st

from testbed.wire import (
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
    NoOperation,
    Packet,
    RemoveAddr,
    Sack,
    SackPermitted,
    TcpSegment,
    Timestamps,
    UnknownMptcp,
    UnknownOption,
    WindowScale,
    encoded_length,
)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 2**64 - 1)

ipv4_addresses = st.ip_addresses(v=4).map(str)
ipv6_addresses = st.ip_addresses(v=6).map(lambda address: address.compressed)


@st.composite
def mp_capables(draw: st.DrawFn) -> MpCapable:
    form = draw(st.integers(0, 4))
    version = draw(st.integers(1, 15))
    flags = draw(u8)
    keys = [draw(u64) if form >= 1 else None, draw(u64) if form >= 2 else None]
    data_len = draw(u16) if form >= 3 else None
    checksum = draw(u16) if form >= 4 else None
    return MpCapable(version, flags, keys[0], keys[1], data_len, checksum)


@st.composite
def dsses(draw: st.DrawFn) -> Dss:
    has_ack = draw(st.booleans())
    ack64 = draw(st.booleans()) if has_ack else True
    has_map = draw(st.booleans())
    dsn64 = draw(st.booleans()) if has_map else True
    return Dss(
        data_ack=(draw(u64) if ack64 else draw(u32)) if has_ack else None,
        data_ack_64=ack64,
        dsn=(draw(u64) if dsn64 else draw(u32)) if has_map else None,
        dsn_64=dsn64,
        subflow_seq=draw(u32) if has_map else None,
        data_len=draw(u16) if has_map else None,
        checksum=draw(st.none() | u16),
        data_fin=draw(st.booleans()),
    )


add_addrs = st.builds(
    AddAddr,
    address_id=u8,
    address=ipv4_addresses | ipv6_addresses,
    port=st.none() | u16,
    hmac=st.none() | u64,
    echo=st.booleans(),
)


@st.composite
def unknown_mptcps(draw: st.DrawFn) -> UnknownMptcp:
    subtype = draw(st.integers(9, 15))
    body = bytes([(subtype << 4) | draw(st.integers(0, 15))]) + draw(st.binary(max_size=20))
    return UnknownMptcp(subtype, body)


mptcp_options = st.one_of(
    mp_capables(),
    st.builds(MpJoinSyn, st.booleans(), u8, u32, u32),
    st.builds(MpJoinSynAck, st.booleans(), u8, u64, u32),
    st.builds(MpJoinAck, st.binary(min_size=20, max_size=20)),
    dsses(),
    add_addrs,
    st.builds(RemoveAddr, st.lists(u8, min_size=1, max_size=20).map(tuple)),
    st.builds(MpPrio, st.booleans(), st.none() | u8),
    st.builds(MpFail, u64),
    st.builds(MpFastclose, u64),
    st.builds(
        MpTcpRst, u8, st.booleans(), st.sampled_from([0, 2, 4, 6, 8, 10, 12, 14])
    ),
    unknown_mptcps(),
)

plain_options = st.one_of(
    st.just(NoOperation()),
    st.builds(MaximumSegmentSize, u16),
    st.builds(WindowScale, u8),
    st.just(SackPermitted()),
    st.builds(Sack, st.lists(st.tuples(u32, u32), min_size=1, max_size=4).map(tuple)),
    st.builds(Timestamps, u32, u32),
    st.builds(
        UnknownOption,
        st.integers(2, 255).filter(lambda kind: kind not in (2, 3, 4, 5, 8, 30)),
        st.binary(max_size=12),
    ),
)

tcp_options = plain_options | mptcp_options


@st.composite
def option_lists(draw: st.DrawFn) -> list:
    """Lists that fit the 40-byte option space (EOL excluded: it ends a list)."""
    options: list = []
    used = 0
    for option in draw(st.lists(tcp_options, max_size=8)):
        size = encoded_length(option)
        if used + size + (-(used + size) % 4) <= 40:
            options.append(option)
            used += size
    return options


segments = st.builds(
    TcpSegment,
    src_port=u16,
    dst_port=u16,
    seq=u32,
    ack=u32,
    flags=u8,
    window=u16,
    options=option_lists(),
    payload=st.binary(max_size=1500),
    urgent=u16,
)

packets = st.builds(
    Packet,
    src=ipv4_addresses,
    dst=ipv4_addresses,
    tcp=segments,
    ttl=u8,
    ident=u16,
    tos=u8,
    dont_fragment=st.booleans(),
)
