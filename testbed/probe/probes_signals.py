"""Probes of path management and closing: ADD_ADDR (RFC 8684 3.4.1), REMOVE_ADDR (3.4.2),
MP_PRIO (3.3.8), MP_FASTCLOSE (3.5) and MP_TCPRST (3.6)."""

from __future__ import annotations

from testbed.probe.catalogue import Missing, Outcome, ProbeContext, failed, judge, probe
from testbed.probe.session import Session
from testbed.probe.steps import FIRST_DATA, is_rst, joined, opened, still_works
from testbed.wire import add_addr_hmac
from testbed.wire.types import RST, AddAddr, MpFastclose, MpPrio, MpTcpRst, Packet, RemoveAddr

PROBER_ADDRESS_ID = 5


def _announce(session: Session, address: str, *, port: int | None = None, hmac: int | None = None,
              address_id: int = PROBER_ADDRESS_ID) -> None:
    value = add_addr_hmac(session.local_key, session.remote_key, address_id, address, port)  # type: ignore[arg-type]
    option = AddAddr(address_id=address_id, address=address, port=port,
                     hmac=value if hmac is None else hmac)
    session.ack(session.initial, [option, session.dss_ack()])


def _echo(packet: Packet) -> bool:
    option = packet.tcp.find(AddAddr)
    return isinstance(option, AddAddr) and option.echo


def _target_add_addr(packet: Packet) -> bool:
    option = packet.tcp.find(AddAddr)
    return isinstance(option, AddAddr) and not option.echo


@probe("add_addr_echo", "signalling", "ADD_ADDR", "RFC 8684 §3.4.1",
       "an ADD_ADDR with a valid HMAC is echoed (E=1, same id and address)")
def add_addr_echo(ctx: ProbeContext) -> Outcome:
    session = opened(ctx)
    _announce(session, ctx.prober[1])
    echo = session.expect(session.initial, _echo, 1.5)
    if echo is None:
        return failed("no ADD_ADDR echo within 1.5 s")
    option = echo.tcp.find(AddAddr)
    ok = option.address_id == PROBER_ADDRESS_ID and option.address == ctx.prober[1]  # type: ignore[union-attr]
    return judge(ok, f"echo id={option.address_id} {option.address}")  # type: ignore[union-attr]


@probe("add_addr_bad_hmac", "signalling", "ADD_ADDR", "RFC 8684 §3.4.1",
       "an ADD_ADDR with a wrong HMAC is ignored: no echo, the connection goes on")
def add_addr_bad_hmac(ctx: ProbeContext) -> Outcome:
    session = opened(ctx)
    _announce(session, ctx.prober[1], hmac=0x0123456789ABCDEF)
    echo = session.expect(session.initial, _echo, 1.0)
    if echo is not None:
        return failed("the ADD_ADDR with a wrong HMAC was echoed")
    alive = still_works(session, session.initial)
    return judge(alive, "no echo; the connection " + ("goes on" if alive else "stopped"))


@probe("add_addr_port", "signalling", "ADD_ADDR", "RFC 8684 §3.4.1",
       "an ADD_ADDR with a port (HMAC over id, address and port) is echoed with the port",
       packetdrill="add_addr/add_addr4_port_client.pkt")
def add_addr_port(ctx: ProbeContext) -> Outcome:
    session = opened(ctx)
    _announce(session, ctx.prober[1], port=ctx.port + 1)
    echo = session.expect(session.initial, _echo, 1.5)
    if echo is None:
        return failed("no ADD_ADDR echo within 1.5 s")
    option = echo.tcp.find(AddAddr)
    return judge(option.port == ctx.port + 1,  # type: ignore[union-attr]
                 f"echo id={option.address_id} port={option.port}")  # type: ignore[union-attr]


def _announced_by_target(ctx: ProbeContext) -> tuple[Session, AddAddr]:
    """A connection to a target set to announce an address, and the first ADD_ADDR it sent
    (Linux sends it right after the handshake, others after the first data)."""
    session = ctx.session()
    session.connect()
    session.first_data(FIRST_DATA)
    found = session.expect(session.initial, _target_add_addr, 1.5)
    if found is not None:
        option = found.tcp.find(AddAddr)
        assert isinstance(option, AddAddr)
        return session, option
    raise Missing("the target, set to announce an address, sent no ADD_ADDR within 1.5 s")


@probe("add_addr_target_hmac", "signalling", "ADD_ADDR", "RFC 8684 §3.4.1",
       "an address the target announces carries HMAC(Key-target||Key-prober, id||address||port)",
       needs="announce", packetdrill="add_addr/add_addr4_server.pkt")
def add_addr_target_hmac(ctx: ProbeContext) -> Outcome:
    session, option = _announced_by_target(ctx)
    session.ack(session.initial, [AddAddr(option.address_id, option.address, option.port, echo=True),
                                  session.dss_ack()])
    wanted = add_addr_hmac(session.remote_key, session.local_key, option.address_id,  # type: ignore[arg-type]
                           option.address, option.port)
    return judge(option.hmac == wanted, f"ADD_ADDR id={option.address_id} {option.address} "
                 f"hmac {'verifies' if option.hmac == wanted else 'does not verify'}")


@probe("add_addr_retransmit", "signalling", "ADD_ADDR", "RFC 8684 §3.4.1",
       "an ADD_ADDR that is not echoed is sent again (the target's add_addr timeout is 1 s here)",
       needs="announce")
def add_addr_retransmit(ctx: ProbeContext) -> Outcome:
    session, _ = _announced_by_target(ctx)
    session.note("the ADD_ADDR is not echoed")
    session.ack(session.initial, [session.dss_ack()])
    again = session.expect(session.initial, _target_add_addr, 3.0)
    return judge(again is not None, "ADD_ADDR sent again" if again is not None
                 else "no second ADD_ADDR within 3 s")


@probe("add_addr_no_hmac", "signalling", "ADD_ADDR", "RFC 8684 §3.4.1",
       "an ADD_ADDR without HMAC and without E (not an echo) is not accepted: no echo")
def add_addr_no_hmac(ctx: ProbeContext) -> Outcome:
    session = opened(ctx)
    session.ack(session.initial, [AddAddr(PROBER_ADDRESS_ID, ctx.prober[1]), session.dss_ack()])
    echo = session.expect(session.initial, _echo, 1.0)
    return judge(echo is None, "echoed" if echo is not None else "no echo")


@probe("remove_addr_unknown", "signalling", "REMOVE_ADDR", "RFC 8684 §3.4.2",
       "a REMOVE_ADDR of an address id the target does not know changes nothing")
def remove_addr_unknown(ctx: ProbeContext) -> Outcome:
    session = opened(ctx)
    session.ack(session.initial, [RemoveAddr((77,)), session.dss_ack()])
    bad = session.expect(session.initial, is_rst, 0.5)
    if bad is not None:
        return failed("RST after REMOVE_ADDR of an unknown id")
    alive = still_works(session, session.initial)
    return judge(alive, "no RST; the connection " + ("goes on" if alive else "stopped"))


@probe("remove_addr_subflow", "signalling", "REMOVE_ADDR", "RFC 8684 §3.4.2",
       "a REMOVE_ADDR of the id of a joined subflow's address makes the target close that "
       "subflow; the connection goes on")
def remove_addr_subflow(ctx: ProbeContext) -> Outcome:
    session = opened(ctx)
    second = joined(ctx, session, address_id=3)
    session.ack(session.initial, [RemoveAddr((3,)), session.dss_ack()])
    closed = session.expect(second, lambda p: bool(p.tcp.flags & (RST | 0x01)), 1.5)
    if closed is None:
        return failed("the subflow of the removed address was not closed within 1.5 s")
    alive = still_works(session, session.initial)
    kind = "RST" if is_rst(closed) else "FIN"
    return judge(alive, f"{kind} on the removed subflow; first subflow "
                 + ("goes on" if alive else "stopped"))


@probe("mp_prio_backup", "congestion", "MP_PRIO and backup", "RFC 8684 §3.3.8",
       "MP_PRIO B=1 on one of two subflows is accepted; the target then sends its data on the "
       "other subflow", packetdrill="mp_prio/mp_prio_server.pkt")
def mp_prio_backup(ctx: ProbeContext) -> Outcome:
    from testbed.probe.steps import settle

    session = opened(ctx)
    second = joined(ctx, session)
    session.ack(second, [MpPrio(backup=True), session.dss_ack()])
    if session.expect(second, is_rst, 0.3) is not None:
        return failed("RST after MP_PRIO")
    session.send_data(second, b"p" * 500)
    seen = settle(session, 0.4)
    on_backup = sum(len(p.tcp.payload) for p in seen if p.tcp.dst_port == second.local_port)
    on_regular = sum(len(p.tcp.payload) for p in seen if p.tcp.dst_port == session.initial.local_port)
    if on_backup + on_regular == 0:
        return failed("the target sent no data back")
    return judge(on_backup == 0, f"echo bytes: {on_regular} on the regular subflow, "
                                 f"{on_backup} on the subflow made backup")


@probe("fastclose_right_key", "signalling", "FAST_CLOSE", "RFC 8684 §3.5",
       "MP_FASTCLOSE with the target's key makes it reset the subflow",
       packetdrill="fastclose/receive_fastclose_with_ack.pkt")
def fastclose_right_key(ctx: ProbeContext) -> Outcome:
    session = opened(ctx)
    session.ack(session.initial, [MpFastclose(session.remote_key)])  # type: ignore[arg-type]
    reset = session.expect(session.initial, is_rst, 1.5)
    if reset is None:
        return failed("no RST within 1.5 s")
    reason = reset.tcp.find(MpTcpRst)
    return judge(True, "RST" + (f" with MP_TCPRST reason {reason.reason}"
                                if isinstance(reason, MpTcpRst) else ""))


@probe("fastclose_wrong_key", "signalling", "FAST_CLOSE", "RFC 8684 §3.5",
       "MP_FASTCLOSE with a wrong key is ignored: no RST, the connection goes on",
       packetdrill="fastclose/receive_fastclose_with_ack.pkt")
def fastclose_wrong_key(ctx: ProbeContext) -> Outcome:
    session = opened(ctx)
    session.ack(session.initial, [MpFastclose((session.remote_key ^ 0xFFFF) & ((1 << 64) - 1))])  # type: ignore[operator]
    if session.expect(session.initial, is_rst, 0.5) is not None:
        return failed("RST after MP_FASTCLOSE with a wrong key")
    alive = still_works(session, session.initial)
    return judge(alive, "no RST; the connection " + ("goes on" if alive else "stopped"))


@probe("fastclose_multi", "signalling", "FAST_CLOSE", "RFC 8684 §3.5",
       "MP_FASTCLOSE with the right key on one of two subflows resets both",
       packetdrill="fastclose/receive_fastclose_with_ack_multi.pkt")
def fastclose_multi(ctx: ProbeContext) -> Outcome:
    session = opened(ctx)
    second = joined(ctx, session)
    session.ack(session.initial, [MpFastclose(session.remote_key)])  # type: ignore[arg-type]
    first_reset = session.expect(session.initial, is_rst, 1.5)
    second_reset = session.expect(second, is_rst, 1.5)
    return judge(first_reset is not None and second_reset is not None,
                 f"RST on the first subflow: {'yes' if first_reset else 'no'}, "
                 f"on the second: {'yes' if second_reset else 'no'}")


@probe("fastclose_rst", "signalling", "FAST_CLOSE", "RFC 8684 §3.5",
       "MP_FASTCLOSE with the right key on a RST (option R) on one subflow makes the target "
       "reset the other subflow", packetdrill="fastclose/receive_fastclose_with_rst_multi.pkt")
def fastclose_rst(ctx: ProbeContext) -> Outcome:
    session = opened(ctx)
    second = joined(ctx, session)
    session.segment(second, RST | 0x10, [MpFastclose(session.remote_key)])  # type: ignore[arg-type]
    reset = session.expect(session.initial, is_rst, 1.5)
    if reset is None:
        return failed("no RST on the first subflow within 1.5 s")
    reason = reset.tcp.find(MpTcpRst)
    return judge(True, "RST on the first subflow" + (f" with MP_TCPRST reason {reason.reason}"
                                                     if isinstance(reason, MpTcpRst) else ""))


@probe("tcprst_join", "signalling", "MP_TCPRST", "RFC 8684 §3.6",
       "a RST with MP_TCPRST on a joined subflow closes only that subflow: the connection goes "
       "on on the first", packetdrill="mp_reset/mp_reset_multi.pkt")
def tcprst_join(ctx: ProbeContext) -> Outcome:
    session = opened(ctx)
    second = joined(ctx, session)
    session.segment(second, RST | 0x10, [MpTcpRst(reason=5)])
    alive = still_works(session, session.initial)
    return judge(alive, "after MP_TCPRST reason 5 on the second subflow the first "
                 + ("goes on" if alive else "stopped"))


@probe("tcprst_initial", "signalling", "MP_TCPRST", "RFC 8684 §3.6",
       "a RST with MP_TCPRST on the initial subflow leaves the connection alive on a joined "
       "subflow")
def tcprst_initial(ctx: ProbeContext) -> Outcome:
    session = opened(ctx)
    second = joined(ctx, session)
    session.segment(session.initial, RST | 0x10, [MpTcpRst(reason=1, transient=True)])
    alive = still_works(session, second)
    return judge(alive, "after MP_TCPRST on the first subflow the second "
                 + ("goes on" if alive else "stopped"))


@probe("tcprst_without_rst_flag", "signalling", "MP_TCPRST", "RFC 8684 §3.6",
       "MP_TCPRST on a segment without the RST flag has no effect: the subflow goes on",
       packetdrill="mp_reset/mp_reset_multi.pkt")
def tcprst_without_rst_flag(ctx: ProbeContext) -> Outcome:
    session = opened(ctx)
    second = joined(ctx, session)
    session.ack(second, [MpTcpRst(reason=1), session.dss_ack()])
    if session.expect(second, is_rst, 0.3) is not None:
        return failed("the target reset the subflow")
    alive = still_works(session, second)
    return judge(alive, "the subflow " + ("goes on" if alive else "stopped acknowledging data"))


@probe("tcprst_not_exact", "signalling", "MP_TCPRST", "RFC 8684 §3.6 (RFC 5961 §3.2)",
       "a RST with MP_TCPRST whose sequence number is in the window but not the next expected "
       "one is answered with a challenge ACK; the subflow goes on",
       packetdrill="mp_reset/mp_reset_multi.pkt")
def tcprst_not_exact(ctx: ProbeContext) -> Outcome:
    session = opened(ctx)
    second = joined(ctx, session)
    session.segment(second, RST, [MpTcpRst(reason=1)], seq=second.snd_nxt + 2000)
    challenge = session.expect(second, lambda p: not is_rst(p) and not p.tcp.payload, 0.5)
    alive = still_works(session, second)
    return judge(challenge is not None and alive,
                 f"challenge ACK: {'yes' if challenge is not None else 'no'}; the subflow "
                 + ("goes on" if alive else "stopped acknowledging data"))
