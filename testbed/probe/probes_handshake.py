"""Probes of connection set-up: MP_CAPABLE (RFC 8684 3.1) and MP_JOIN (3.2)."""

from __future__ import annotations

from testbed.probe.catalogue import Missing, Outcome, ProbeContext, failed, judge, passed, probe
from testbed.probe.session import U64, NoMptcp, TargetSilent, has_mptcp
from testbed.probe.steps import FIRST_DATA, is_rst, joined, opened, settle
from testbed.wire import join_synack_hmac
from testbed.wire.types import (
    ACK,
    MPCAPABLE_FLAG_CHECKSUM,
    MPCAPABLE_FLAG_EXTENSIBILITY,
    MPCAPABLE_FLAG_HMAC_SHA256,
    PSH,
    SYN,
    Dss,
    MpCapable,
    MpJoinAck,
    MpJoinSynAck,
    MpTcpRst,
    Packet,
)

H = MPCAPABLE_FLAG_HMAC_SHA256


def _synack(ctx: ProbeContext, flags: int, version: int = 1) -> tuple[object, Packet]:
    session = ctx.session()
    answer = session.mp_capable_syn(flags, version)
    if answer is None:
        raise TargetSilent("no answer to a SYN")
    return session, answer


def _plain_fallback(ctx: ProbeContext, flags: int, version: int = 1) -> Outcome:
    """A SYN whose MP_CAPABLE a v1 host must ignore: a plain TCP SYN/ACK, then plain TCP."""
    session, answer = _synack(ctx, flags, version)
    if is_rst(answer):
        return failed("the SYN was answered with a RST")
    mpc = answer.tcp.find(MpCapable)
    if mpc is not None:
        return failed(f"the SYN/ACK carries MP_CAPABLE v{mpc.version}: the option was not ignored")
    sub = session.initial  # type: ignore[attr-defined]
    session.ack(sub)  # type: ignore[attr-defined]
    session.segment(sub, ACK | PSH, [], b"plain tcp\n")  # type: ignore[attr-defined]
    echo = session.expect(sub, lambda p: bool(p.tcp.payload), 1.0)  # type: ignore[attr-defined]
    if echo is None:
        return failed("plain SYN/ACK, but data sent after it was not echoed")
    if has_mptcp(echo):
        return failed("plain SYN/ACK, but the target's data carries MPTCP options")
    return passed("SYN/ACK without MP_CAPABLE; the connection then works as plain TCP")


@probe("mpc_handshake", "signalling", "MP_CAPABLE", "RFC 8684 §3.1",
       "a SYN with MP_CAPABLE v1 (H) gets a SYN/ACK with MP_CAPABLE v1, a 64-bit key and H set")
def mpc_handshake(ctx: ProbeContext) -> Outcome:
    _, answer = _synack(ctx, H)
    mpc = answer.tcp.find(MpCapable)
    if not answer.tcp.flags & SYN or not isinstance(mpc, MpCapable):
        raise NoMptcp("the SYN/ACK has no MP_CAPABLE")
    ok = mpc.version == 1 and mpc.sender_key is not None and bool(mpc.flags & H)
    return judge(ok, f"SYN/ACK MP_CAPABLE v{mpc.version} flags={mpc.flags:#04x} "
                     f"key={'present' if mpc.sender_key is not None else 'absent'}")


@probe("mpc_version0", "fallback", "MP_CAPABLE", "RFC 8684 §3.1",
       "MP_CAPABLE version 0 is not answered with version 1 (v1 only: plain TCP SYN/ACK)",
       packetdrill="mp_capable/v1_bind_tcpfallback_wrongver.pkt")
def mpc_version0(ctx: ProbeContext) -> Outcome:
    return _plain_fallback(ctx, H, version=0)


@probe("mpc_flag_b", "fallback", "MP_CAPABLE", "RFC 8684 §3.1",
       "MP_CAPABLE with B (extensibility) set is silently ignored: plain TCP",
       packetdrill="mp_capable/v1_bind_tcpfallback_flagB.pkt")
def mpc_flag_b(ctx: ProbeContext) -> Outcome:
    return _plain_fallback(ctx, H | MPCAPABLE_FLAG_EXTENSIBILITY)


@probe("mpc_no_flag_h", "fallback", "MP_CAPABLE", "RFC 8684 §3.1",
       "MP_CAPABLE with no crypto algorithm bit (H clear) is ignored: plain TCP",
       packetdrill="mp_capable/v1_bind_tcpfallback_flagH.pkt")
def mpc_no_flag_h(ctx: ProbeContext) -> Outcome:
    return _plain_fallback(ctx, 0)


@probe("mpc_plain_syn", "fallback", "MP_CAPABLE removed", "RFC 8684 §3.7",
       "a SYN without MP_CAPABLE gets a SYN/ACK without MPTCP options and plain TCP service",
       packetdrill="mp_capable/v1_bind_tcpfallback_nompc.pkt")
def mpc_plain_syn(ctx: ProbeContext) -> Outcome:
    session = ctx.session()
    answer = session.syn([])
    if answer is None:
        raise TargetSilent("no answer to a plain SYN")
    if has_mptcp(answer):
        return failed("the SYN/ACK to a plain SYN carries MPTCP options")
    sub = session.initial
    session.ack(sub)
    session.segment(sub, ACK | PSH, [], b"plain\n")
    echo = session.expect(sub, lambda p: bool(p.tcp.payload))
    return judge(echo is not None and not has_mptcp(echo),
                 "plain SYN/ACK; data echoed without MPTCP options" if echo is not None
                 else "plain SYN/ACK but data was not echoed")


@probe("mpc_first_data", "signalling", "MP_CAPABLE", "RFC 8684 §3.1",
       "data carrying MP_CAPABLE with both keys and a data-level length is acknowledged at data "
       "level (DSS data ACK covering it)", packetdrill="dss/mpc_with_data_server.pkt")
def mpc_first_data(ctx: ProbeContext) -> Outcome:
    session = ctx.session()
    session.connect()
    session.first_data(FIRST_DATA)
    acked = session.data_acked(session.initial, session.dsn())
    if acked is None:
        return failed("no data ACK covering the MP_CAPABLE data within 1 s")
    dss = acked.tcp.find(Dss)
    return passed(f"data ACK {'64' if dss.data_ack_64 else '32'}-bit covering the first "  # type: ignore[union-attr]
                  f"{len(FIRST_DATA)} bytes")


@probe("mpc_third_ack_lost", "signalling", "MP_CAPABLE", "RFC 8684 §3.1",
       "without the third ACK, the first data with MP_CAPABLE (both keys) completes the "
       "handshake: the data is acknowledged at data level")
def mpc_third_ack_lost(ctx: ProbeContext) -> Outcome:
    session = ctx.session()
    session.connect(third_ack=False)
    session.note("third ACK withheld (lost)")
    session.first_data(FIRST_DATA)
    acked = session.data_acked(session.initial, session.dsn())
    return judge(acked is not None, "data ACK covering the first data" if acked is not None
                 else "no data ACK within 1 s")


@probe("mpc_idsn", "signalling", "DSS", "RFC 8684 §3.1, §3.3.1",
       "the target's first DSN is its IDSN + 1, the IDSN being the low 64 bits of SHA-256 of "
       "its key")
def mpc_idsn(ctx: ProbeContext) -> Outcome:
    session = ctx.session()
    session.connect()
    session.first_data(FIRST_DATA)
    first = session.expect(session.initial, lambda p: bool(p.tcp.payload), 1.5)
    if first is None:
        return failed("the target did not send (echo) data")
    dss = first.tcp.find(Dss)
    if not isinstance(dss, Dss) or dss.dsn is None:
        return failed("the target's first data has no DSS mapping")
    wanted = (session.remote_idsn + 1) & U64
    value = dss.dsn
    ok = value == (wanted if dss.dsn_64 else wanted & 0xFFFFFFFF)
    return judge(ok, f"first DSN {value:#x} ({'64' if dss.dsn_64 else '32'}-bit), "
                     f"IDSN+1 from the key {wanted:#x}")


@probe("mpc_flag_a", "signalling", "Checksum", "RFC 8684 §3.1, §3.3.1",
       "when the initiator sets A (checksum required), the target's data carries correct DSS "
       "checksums")
def mpc_flag_a(ctx: ProbeContext) -> Outcome:
    from testbed.wire import dss_checksum

    session = ctx.session()
    synack = session.connect(flags=H | MPCAPABLE_FLAG_CHECKSUM)
    mpc = synack.tcp.find(MpCapable)
    session.first_data(FIRST_DATA, flags=H | MPCAPABLE_FLAG_CHECKSUM)
    data = session.expect(session.initial, lambda p: bool(p.tcp.payload), 1.5)
    if data is None:
        return failed("the target did not send (echo) data")
    dss = data.tcp.find(Dss)
    if not isinstance(dss, Dss) or dss.dsn is None:
        return failed("the target's data has no DSS mapping")
    if dss.checksum is None:
        return failed("the target's mapping has no checksum although A was set")
    dsn = dss.dsn if dss.dsn_64 else ((session.remote_idsn + 1) & ~0xFFFFFFFF) | dss.dsn
    payload = data.tcp.payload[: dss.data_len]
    right = dss_checksum(dsn, dss.subflow_seq or 0, dss.data_len or 0, payload) == dss.checksum
    return judge(right, f"SYN/ACK A={int(bool(mpc.flags & MPCAPABLE_FLAG_CHECKSUM))}; "  # type: ignore[union-attr]
                        f"target mapping checksum {dss.checksum:#06x} "
                        f"{'verifies' if right else 'does not verify'}")


@probe("mpc_key_unique", "signalling", "MP_CAPABLE", "RFC 8684 §3.1",
       "two connections get different keys and tokens from the target")
def mpc_key_unique(ctx: ProbeContext) -> Outcome:
    first, second = ctx.session(), ctx.session()
    first.connect()
    second.connect()
    same_key = first.remote_key == second.remote_key
    same_token = first.remote_token == second.remote_token
    return judge(not same_key and not same_token,
                 f"tokens {first.remote_token:#010x} and {second.remote_token:#010x}")


# --- MP_JOIN ---------------------------------------------------------------------------------
@probe("join_synack_hmac", "signalling", "MP_JOIN", "RFC 8684 §3.2",
       "a valid MP_JOIN SYN gets a SYN/ACK with MP_JOIN whose truncated HMAC is "
       "HMAC(Key-B||Key-A, R-B||R-A)", packetdrill="mp_join/mp_join_server.pkt")
def join_synack_hmac_probe(ctx: ProbeContext) -> Outcome:
    session = opened(ctx)
    sub, synack = session.join(ctx.prober[1])
    if synack is None or is_rst(synack):
        raise Missing("the target does not accept MP_JOIN (" +
                      ("no answer" if synack is None else "RST") + ")")
    join = synack.tcp.find(MpJoinSynAck)
    if not isinstance(join, MpJoinSynAck):
        return failed("the SYN/ACK to MP_JOIN carries no MP_JOIN")
    wanted = join_synack_hmac(session.remote_key, session.local_key, join.sender_nonce, sub.nonce)  # type: ignore[arg-type]
    return judge(join.sender_truncated_hmac == wanted,
                 f"truncated HMAC {join.sender_truncated_hmac:#018x}, expected {wanted:#018x}")


@probe("join_unknown_token", "signalling", "MP_JOIN", "RFC 8684 §3.2",
       "an MP_JOIN SYN with a token the target does not know is answered with a RST")
def join_unknown_token(ctx: ProbeContext) -> Outcome:
    session = opened(ctx)
    token = (session.remote_token ^ 0x5A5A5A5A) & 0xFFFFFFFF
    _, answer = session.join(ctx.prober[1], token=token)
    if answer is None:
        return failed("no answer within 2 s (silently dropped)")
    reason = answer.tcp.find(MpTcpRst)
    extra = f" with MP_TCPRST reason {reason.reason}" if isinstance(reason, MpTcpRst) else ""
    return judge(is_rst(answer), ("RST" + extra) if is_rst(answer) else "SYN/ACK: the join was accepted")


@probe("join_fourth_ack", "signalling", "MP_JOIN", "RFC 8684 §3.2",
       "the third ACK with a valid HMAC is answered with a TCP ACK (the fourth ACK)",
       packetdrill="mp_join/mp_join_server.pkt")
def join_fourth_ack(ctx: ProbeContext) -> Outcome:
    session = opened(ctx)
    sub, synack = session.join(ctx.prober[1])
    if synack is None or synack.tcp.find(MpJoinSynAck) is None:
        raise Missing("the target does not accept MP_JOIN")
    session.ack(sub, [MpJoinAck(session.join_ack_hmac(sub, synack))])
    answer = session.expect(sub, lambda p: not p.tcp.flags & SYN)
    if answer is None:
        return failed("no ACK within 1 s")
    return judge(not is_rst(answer), "RST" if is_rst(answer) else "ACK")


@probe("join_bad_ack_hmac", "signalling", "MP_JOIN", "RFC 8684 §3.2",
       "a third ACK with a wrong HMAC makes the target reset the subflow; the connection "
       "goes on on the first subflow")
def join_bad_ack_hmac(ctx: ProbeContext) -> Outcome:
    session = opened(ctx)
    sub, synack = session.join(ctx.prober[1])
    if synack is None or synack.tcp.find(MpJoinSynAck) is None:
        raise Missing("the target does not accept MP_JOIN")
    wrong = bytes(b ^ 0xFF for b in session.join_ack_hmac(sub, synack))
    session.ack(sub, [MpJoinAck(wrong)])
    answer = session.expect(sub, is_rst, 1.5)
    if answer is None:
        return failed("no RST within 1.5 s")
    reason = answer.tcp.find(MpTcpRst)
    session.send_data(session.initial, b"after the bad join\n")
    alive = session.data_acked(session.initial, session.dsn()) is not None
    text = f"RST{f' with MP_TCPRST reason {reason.reason}' if isinstance(reason, MpTcpRst) else ''}"
    return judge(alive, text + ("; first subflow still works" if alive else
                                "; the first subflow stopped acknowledging data"))


@probe("join_third_ack_repeated", "signalling", "MP_JOIN", "RFC 8684 §3.2",
       "when the fourth ACK is lost the initiator repeats the third ACK: the target answers "
       "it again with an ACK, not a RST")
def join_third_ack_repeated(ctx: ProbeContext) -> Outcome:
    session = opened(ctx)
    sub, synack = session.join(ctx.prober[1])
    if synack is None or synack.tcp.find(MpJoinSynAck) is None:
        raise Missing("the target does not accept MP_JOIN")
    third = [MpJoinAck(session.join_ack_hmac(sub, synack))]
    session.ack(sub, third)
    session.expect(sub, lambda p: not p.tcp.flags & SYN, 0.5)
    session.note("fourth ACK treated as lost: third ACK repeated")
    session.ack(sub, third)
    answer = session.expect(sub, lambda p: not p.tcp.flags & SYN, 1.0)
    if answer is None:
        session.send_data(sub, b"on the join\n")
        acked = session.data_acked(sub, session.dsn())
        return judge(acked is not None, "repeated third ACK not answered; data on the subflow "
                     + ("acknowledged" if acked is not None else "not acknowledged"))
    return judge(not is_rst(answer), "RST" if is_rst(answer) else "ACK")


@probe("join_data", "signalling", "Subflows", "RFC 8684 §3.2, §3.3",
       "data mapped on a joined subflow is acknowledged at data level on that subflow")
def join_data(ctx: ProbeContext) -> Outcome:
    session = opened(ctx)
    sub = joined(ctx, session)
    session.send_data(sub, b"data on the second subflow\n")
    acked = session.data_acked(sub, session.dsn())
    return judge(acked is not None, "data ACK on the joined subflow" if acked is not None
                 else "no data ACK on the joined subflow within 1 s")


@probe("join_backup", "congestion", "MP_PRIO and backup", "RFC 8684 §3.2, §3.3.8",
       "with a regular and a backup subflow (MP_JOIN B=1), the target sends its data on the "
       "regular subflow")
def join_backup(ctx: ProbeContext) -> Outcome:
    session = opened(ctx)
    backup = joined(ctx, session, backup=True)
    session.send_data(backup, b"x" * 600)
    seen = settle(session, 0.4)
    on_backup = sum(len(p.tcp.payload) for p in seen if p.tcp.dst_port == backup.local_port)
    on_regular = sum(len(p.tcp.payload) for p in seen if p.tcp.dst_port == session.initial.local_port)
    if on_backup + on_regular == 0:
        return failed("the target sent no data back")
    return judge(on_backup == 0, f"echo bytes: {on_regular} on the regular subflow, "
                                 f"{on_backup} on the backup subflow")
