"""Probes with the target as the client: its MP_CAPABLE SYN, third ACK and first data
(RFC 8684 3.1), the fallback when our SYN/ACK has no MP_CAPABLE (3.7), and its MP_JOIN
(3.2): a wrong HMAC on our SYN/ACK, and its third ACK repeated until our fourth ACK."""

from __future__ import annotations

from testbed.probe.catalogue import Missing, Outcome, Prerequisite, ProbeContext, failed, judge, probe
from testbed.probe.session import Session, Subflow, has_mptcp
from testbed.probe.steps import is_rst
from testbed.wire import dss_checksum, join_ack_hmac, join_synack_hmac
from testbed.wire.types import (
    MPCAPABLE_FLAG_CHECKSUM,
    MPCAPABLE_FLAG_HMAC_SHA256,
    SYN,
    Dss,
    MpCapable,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    Packet,
)

H = MPCAPABLE_FLAG_HMAC_SHA256
CLIENT_START_S = 15.0  # a loaded machine starts a Python process slowly


def _not_syn(packet: Packet) -> bool:
    return not packet.tcp.flags & SYN


def _client_syn(ctx: ProbeContext) -> tuple[Session, Subflow, Packet]:
    """Start the target as a client and take its SYN."""
    session = ctx.session(budget_s=CLIENT_START_S + 15)
    ctx.client()
    syn = session.expect_syn(lambda p: p.tcp.find(MpJoinSyn) is None, CLIENT_START_S)
    if syn is None:
        raise Prerequisite(f"the target, started as a client, sent no SYN within {CLIENT_START_S:.0f} s")
    return session, session.accept(syn, initial=True), syn


def _client_established(ctx: ProbeContext, flags: int = H) -> tuple[Session, Subflow, list[Packet]]:
    """MP_CAPABLE handshake with the target as client, its first data acknowledged."""
    session, sub, syn = _client_syn(ctx)
    if not isinstance(syn.tcp.find(MpCapable), MpCapable):
        raise Missing("the target's SYN has no MP_CAPABLE")
    session.synack(sub, [MpCapable(version=1, flags=flags, sender_key=session.local_key)])
    seen: list[Packet] = []
    while (packet := session.expect(sub, _not_syn, 1.5)) is not None:
        seen.append(packet)
        mpc = packet.tcp.find(MpCapable)
        if isinstance(mpc, MpCapable) and mpc.sender_key is not None and session.remote_key is None:
            session.remote_key = mpc.sender_key
        if packet.tcp.payload:
            break
    if session.remote_key is None:
        raise Prerequisite("the target's third ACK and first data carried no MP_CAPABLE key")
    session.ack(sub, [session.dss_ack()])
    return session, sub, seen


@probe("client_mpc_keys", "signalling", "MP_CAPABLE", "RFC 8684 §3.1",
       "as a client the target sends MP_CAPABLE v1 without a key on its SYN, and both keys "
       "(ours echoed) on its third ACK or first data", needs="client")
def client_mpc_keys(ctx: ProbeContext) -> Outcome:
    session, _, syn = _client_syn(ctx)
    offer = syn.tcp.find(MpCapable)
    if not isinstance(offer, MpCapable):
        raise Missing("the target's SYN has no MP_CAPABLE")
    session.synack(session.initial, [MpCapable(version=1, flags=H, sender_key=session.local_key)])
    answer = session.expect(session.initial, lambda p: isinstance(p.tcp.find(MpCapable), MpCapable), 1.5)
    if answer is None:
        return failed("no MP_CAPABLE after our SYN/ACK")
    mpc = answer.tcp.find(MpCapable)
    assert isinstance(mpc, MpCapable)
    ok = (offer.version == 1 and offer.sender_key is None and bool(offer.flags & H)
          and mpc.receiver_key == session.local_key and mpc.sender_key is not None)
    echoed = "our key echoed" if mpc.receiver_key == session.local_key else "a wrong receiver key"
    return judge(ok, f"SYN MP_CAPABLE v{offer.version} flags={offer.flags:#04x} "
                     f"{'without' if offer.sender_key is None else 'with'} key; then MP_CAPABLE "
                     f"with {echoed}")


@probe("client_synack_no_mpc", "fallback", "MP_CAPABLE removed", "RFC 8684 §3.1, §3.7",
       "when the SYN/ACK has no MP_CAPABLE, the client falls back: its ACK and data carry no "
       "MPTCP options", needs="client")
def client_synack_no_mpc(ctx: ProbeContext) -> Outcome:
    session, sub, _ = _client_syn(ctx)
    session.synack(sub, [])
    seen = [p for p in session.collect(1.5) if p.tcp.dst_port == sub.local_port]
    if sub.rcv_nxt != (sub.peer_isn + 1) & 0xFFFFFFFF:  # type: ignore[operator]
        session.ack(sub)
    data = [p for p in seen if p.tcp.payload]
    with_options = [p for p in seen if has_mptcp(p)]
    if not data:
        return failed("the client sent no data after the plain SYN/ACK")
    return judge(not with_options, f"{len(data)} data segments, "
                 f"{len(with_options)} segments with MPTCP options")


@probe("client_synack_flag_a", "signalling", "Checksum", "RFC 8684 §3.1, §3.3.1",
       "when the SYN/ACK sets A (checksums required), the client's first data carries a "
       "correct DSS checksum", needs="client")
def client_synack_flag_a(ctx: ProbeContext) -> Outcome:
    session, _, seen = _client_established(ctx, flags=H | MPCAPABLE_FLAG_CHECKSUM)
    data = next((p for p in seen if p.tcp.payload), None)
    if data is None:
        return failed("the client sent no data")
    option = data.tcp.find(MpCapable) or data.tcp.find(Dss)
    checksum = getattr(option, "checksum", None)
    if checksum is None:
        return failed("the client's first data has no checksum although A was set")
    if isinstance(option, MpCapable):
        dsn, ssn, length = (session.remote_idsn + 1) & ((1 << 64) - 1), 1, option.data_len or 0
    else:
        assert isinstance(option, Dss)
        dsn, ssn, length = option.dsn or 0, option.subflow_seq or 0, option.data_len or 0
    right = dss_checksum(dsn, ssn, length, data.tcp.payload[:length]) == checksum
    return judge(right, f"checksum {checksum:#06x} on {type(option).__name__} "
                        f"{'verifies' if right else 'does not verify'}")


def _join_syn(ctx: ProbeContext) -> tuple[Session, Subflow, MpJoinSyn]:
    session, _, _ = _client_established(ctx)
    def ours(packet: Packet) -> bool:
        join = packet.tcp.find(MpJoinSyn)
        return isinstance(join, MpJoinSyn) and join.receiver_token == session.local_token

    syn = session.expect_syn(ours, 4.0)
    if syn is None:
        raise Missing("the target, as a client with a second address, opened no second subflow")
    join = syn.tcp.find(MpJoinSyn)
    if not isinstance(join, MpJoinSyn):
        raise Prerequisite("the target's second SYN carries no MP_JOIN")
    if join.receiver_token != session.local_token:
        raise Prerequisite(f"the join's token {join.receiver_token:#010x} is not ours")
    return session, session.accept(syn), join


@probe("client_join_bad_synack_hmac", "signalling", "MP_JOIN", "RFC 8684 §3.2",
       "a SYN/ACK to the client's MP_JOIN with a wrong HMAC makes the client reset the subflow",
       needs="client")
def client_join_bad_synack_hmac(ctx: ProbeContext) -> Outcome:
    session, sub, join = _join_syn(ctx)
    right = join_synack_hmac(session.local_key, session.remote_key, sub.nonce, join.sender_nonce)  # type: ignore[arg-type]
    session.synack(sub, [MpJoinSynAck(backup=False, address_id=0,
                                      sender_truncated_hmac=right ^ 0xFFFF, sender_nonce=sub.nonce)])
    answer = session.expect(sub, _not_syn, 1.5)
    if answer is None:
        return failed("no answer within 1.5 s")
    return judge(is_rst(answer), "RST" if is_rst(answer) else
                 ("third ACK with MP_JOIN: the subflow was accepted"
                  if answer.tcp.find(MpJoinAck) else "an ACK, not a RST"))


@probe("client_join_third_ack", "signalling", "MP_JOIN", "RFC 8684 §3.2",
       "the client's third ACK of a join carries HMAC(Key-A||Key-B, R-A||R-B) and is sent again "
       "until the fourth ACK arrives", needs="client", packetdrill="mp_join/3rdack_rtx.pkt")
def client_join_third_ack(ctx: ProbeContext) -> Outcome:
    session, sub, join = _join_syn(ctx)
    mac = join_synack_hmac(session.local_key, session.remote_key, sub.nonce, join.sender_nonce)  # type: ignore[arg-type]
    session.synack(sub, [MpJoinSynAck(backup=False, address_id=0, sender_truncated_hmac=mac,
                                      sender_nonce=sub.nonce)])
    first = session.expect(sub, lambda p: p.tcp.find(MpJoinAck) is not None, 1.5)
    if first is None:
        return failed("no third ACK with MP_JOIN")
    option = first.tcp.find(MpJoinAck)
    assert isinstance(option, MpJoinAck)
    wanted = join_ack_hmac(session.remote_key, session.local_key, join.sender_nonce, sub.nonce)  # type: ignore[arg-type]
    if option.sender_hmac != wanted:
        return failed("the third ACK's HMAC does not verify")
    session.note("fourth ACK withheld")
    again = session.expect(sub, lambda p: p.tcp.find(MpJoinAck) is not None, 2.5)
    if again is not None:
        session.ack(sub, [session.dss_ack()])
    return judge(again is not None, "HMAC verifies; third ACK "
                 + ("sent again" if again is not None else "not sent again within 2.5 s"))



