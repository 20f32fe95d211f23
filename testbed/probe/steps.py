"""Exchanges many probes share: an established MPTCP connection, a joined subflow, settling."""

from __future__ import annotations

from testbed.probe.catalogue import Missing, Prerequisite, ProbeContext
from testbed.probe.session import Session, Subflow
from testbed.wire.types import (
    ACK,
    MPCAPABLE_FLAG_HMAC_SHA256,
    RST,
    SYN,
    Dss,
    MpJoinAck,
    MpJoinSynAck,
    Packet,
)

FIRST_DATA = b"probe: first data, carried by MP_CAPABLE\n"


def settle(session: Session, timeout_s: float = 0.25) -> list[Packet]:
    """Take what the target sends for a while (its echo) and acknowledge new data on each
    subflow with a data ACK, as a well-behaved peer would."""
    seen = session.collect(timeout_s)
    for sub in session.subflows:
        if sub.rcv_nxt != sub.acked and sub.peer_isn is not None:
            session.ack(sub, [session.dss_ack()])
    return seen


def opened(ctx: ProbeContext, *, flags: int = MPCAPABLE_FLAG_HMAC_SHA256,
           payload: bytes = FIRST_DATA, budget_s: float = 15.0) -> Session:
    """An MPTCP connection with the first data exchanged both ways (fully established)."""
    session = ctx.session(budget_s)
    session.connect(flags=flags)
    session.first_data(payload, flags=flags)
    if session.data_acked(session.initial, session.dsn()) is None:
        raise Prerequisite("the target did not acknowledge the first data (MP_CAPABLE + data) "
                           "at data level within 1 s")
    settle(session)
    return session


def joined(ctx: ProbeContext, session: Session, *, backup: bool = False,
           address_id: int = 1) -> Subflow:
    """A second subflow from the prober's other address, MP_JOIN handshake completed."""
    sub, synack = session.join(ctx.prober[1], backup=backup, address_id=address_id)
    if synack is None or not synack.tcp.flags & SYN or synack.tcp.find(MpJoinSynAck) is None:
        raise Missing("the target did not accept an MP_JOIN with a valid token "
                      f"({'no answer' if synack is None else 'answered without MP_JOIN SYN/ACK'})")
    session.ack(sub, [MpJoinAck(session.join_ack_hmac(sub, synack))])
    fourth = session.expect(sub, lambda p: bool(p.tcp.flags & (ACK | RST)) and not p.tcp.flags & SYN)
    if fourth is None or fourth.tcp.flags & RST:
        raise Prerequisite("the target did not complete the MP_JOIN handshake (no fourth ACK)")
    return sub


def data_ack_of(packet: Packet) -> int | None:
    dss = packet.tcp.find(Dss)
    return dss.data_ack if isinstance(dss, Dss) else None


def is_rst(packet: Packet) -> bool:
    return bool(packet.tcp.flags & RST)


def still_works(session: Session, sub: Subflow, payload: bytes = b"still there?\n") -> bool:
    """Data on `sub` is acknowledged at data level: the connection goes on."""
    session.send_data(sub, payload)
    return session.data_acked(sub, session.dsn()) is not None
