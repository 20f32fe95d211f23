"""In-connection address signalling (RFC 8684 3.4, 3.5): ADD_ADDR with HMAC, its echo and
retransmission, REMOVE_ADDR, and the address ids on both sides.

`Signalling` owns what was announced and what is still to be sent; the option writer takes
pending signals onto pure ACKs within the option budget (`take_signals`). It handles the
received ADD_ADDR, REMOVE_ADDR and MP_PRIO options (handlers of the connection's option
table) and acts on the rest of the connection only through `SignallingEffects`.
"""

from __future__ import annotations

from typing import Protocol

from testbed.mptcp.config import StackConfig
from testbed.mptcp.errors import LocalProtocolError
from testbed.mptcp.handshake import Handshake
from testbed.mptcp.scheduler import eligible_subflows
from testbed.mptcp.subflow_context import SubflowContext
from testbed.wire.crypto import add_addr_hmac
from testbed.wire.tcp_options import encoded_length
from testbed.wire.types import (
    MPTCPRST_UNSPECIFIED,
    AddAddr,
    MpPrio,
    MpTcpRst,
    RemoveAddr,
    TcpOption,
    TcpSegment,
)


class SignallingEffects(Protocol):
    """What signalling asks of its connection (connection.Connection)."""

    def address_announced(self, address_id: int, address: str, port: int | None,
                          now: float) -> None: ...

    def address_removed(self, address_id: int) -> None: ...

    def reset_subflow(self, context: SubflowContext, now: float,
                      rst_options: list[TcpOption] | None = None,
                      reason: str = "reset") -> None: ...


class Signalling:
    """Address ids, ADD_ADDR/REMOVE_ADDR pending and announced, and their retransmission."""

    def __init__(self, *, config: StackConfig, counters: dict[str, int], local_address: str,
                 local_port: int, handshake: Handshake, live_subflows: list[SubflowContext],
                 effects: SignallingEffects) -> None:
        self.config = config
        self.counters = counters
        self.handshake = handshake
        self.live_subflows = live_subflows
        self.effects = effects
        # (address, port) -> id; port None: the address at the connection's own port. The
        # initial subflow's address is id 0 (RFC 8684 §3.4.1); the same address announced with
        # another port is another address, so it gets its own id: Linux ignores an ADD_ADDR
        # with id 0 that is not the initial subflow's address and port.
        self.local_address_ids: dict[tuple[str, int | None], int] = {(local_address, None): 0}
        self.local_port = local_port  # the initial subflow's: a port that says nothing new
        self.remote_addresses: dict[int, tuple[str, int | None]] = {}  # id -> (address, port)
        self.pending_add_addr: list[AddAddr] = []
        self.pending_echo: list[AddAddr] = []
        self.pending_remove: list[int] = []
        # address id -> (option, retransmission deadline, retransmissions so far)
        self.announced: dict[int, tuple[AddAddr, float, int]] = {}

    def local_address_id(self, address: str, port: int | None = None) -> int:
        key = (address, None if port == self.local_port else port)
        if key not in self.local_address_ids:
            self.local_address_ids[key] = len(self.local_address_ids)
        return self.local_address_ids[key]

    def join_address_id(self, address: str, port: int) -> int:
        """The id of the local address a join arrived at: the one announced with that port if
        there is one, else the address's own."""
        announced = self.local_address_ids.get((address, port))
        return announced if announced is not None else self.local_address_id(address)

    @property
    def pending(self) -> bool:
        return bool(self.pending_echo or self.pending_add_addr or self.pending_remove)

    # ------------------------------------------------------------------ what we send
    def add_address(self, address: str, port: int | None, now: float) -> int:
        """Announce a local address (ADD_ADDR, retransmitted until echoed)."""
        remote_key = self.handshake.remote_key
        assert remote_key is not None
        address_id = self.local_address_id(address, port)
        if address_id in self.announced:
            return address_id
        option = AddAddr(address_id=address_id, address=address, port=port,
                         hmac=add_addr_hmac(self.handshake.local_key, remote_key, address_id,
                                            address, port))
        self.pending_add_addr.append(option)
        self.announced[address_id] = (option, now + self.config.add_addr_timeout_s, 0)
        self.signal_now(now)
        return address_id

    def remove_address(self, address: str, now: float) -> None:
        """REMOVE_ADDR for a local address, and close our subflows that use it."""
        address_ids = [i for (known, _port), i in self.local_address_ids.items() if known == address]
        if not address_ids:
            raise LocalProtocolError(f"remove_address: {address} has no address id here")
        for address_id in address_ids:  # the address at every port it was announced with
            self.announced.pop(address_id, None)
            self.pending_remove.append(address_id)
        self.signal_now(now, avoid_address=address)
        for context in list(self.live_subflows):
            if context.tcp.local_address == address and not context.tcp.is_closed:
                self.effects.reset_subflow(context, now, [MpTcpRst(MPTCPRST_UNSPECIFIED)],
                                           "removed")

    def set_backup(self, context: SubflowContext, backup: bool, now: float) -> None:
        """MP_PRIO on that subflow: ask the peer to treat it as (non-)backup."""
        if context not in self.live_subflows:
            raise LocalProtocolError("set_backup: subflow does not belong to this connection")
        context.backup_local = backup
        context.pending_prio = backup
        context.tcp.send_ack(now, context)

    def signal_now(self, now: float, avoid_address: str | None = None) -> None:
        """Send pending signals on a pure ACK now, preferring a subflow that will survive."""
        usable = eligible_subflows(self.live_subflows)
        preferred = [c for c in usable if c.tcp.local_address != avoid_address]
        if preferred or usable:
            chosen = (preferred or usable)[0]
            chosen.tcp.send_ack(now, chosen)

    def take_signals(self, used: int, budget: int) -> list[TcpOption]:
        """The pending signals that fit after `used` option bytes, removed from pending."""
        signals: list[TcpOption] = []
        if self.pending_echo:
            signals.append(self.pending_echo[0])
        elif self.pending_add_addr:
            signals.append(self.pending_add_addr[0])
        if self.pending_remove:
            signals.append(RemoveAddr(tuple(self.pending_remove)))
        taken: list[TcpOption] = []
        for signal in signals:
            size = encoded_length(signal)
            if used + size > budget:
                continue
            used += size
            taken.append(signal)
            if type(signal) is AddAddr:
                if signal.echo:
                    self.pending_echo.pop(0)
                    self.counters["EchoAddTx"] += 1
                else:
                    self.pending_add_addr.pop(0)
                    self.counters["AddAddrTx"] += 1
            else:
                self.counters["RmAddrTx"] += 1
                self.pending_remove = []
        return taken

    def handle_timer(self, now: float) -> None:
        """Send again ADD_ADDRs not echoed in time (Linux: once)."""
        if self._retransmit_due(now):
            self.signal_now(now)

    def _retransmit_due(self, now: float) -> bool:
        queued = False
        for address_id, (option, deadline, tries) in list(self.announced.items()):
            if now < deadline:
                continue
            if tries >= self.config.add_addr_max_retransmits:
                del self.announced[address_id]
                continue
            self.pending_add_addr.append(option)
            self.announced[address_id] = (option, now + self.config.add_addr_timeout_s,
                                          tries + 1)
            queued = True
        return queued

    def next_deadline(self) -> float | None:
        if not self.announced:
            return None
        return min(deadline for _, deadline, _ in self.announced.values())

    # ------------------------------------------------------------------ what arrives
    def on_add_addr(self, context: SubflowContext, option: AddAddr, segment: TcpSegment,
                    offset: int, now: float) -> bool:
        """ADD_ADDR option handler: an echo of ours, or the peer's address to echo."""
        if option.echo:
            self.counters["EchoAdd"] += 1
            self.announced.pop(option.address_id, None)
            return False
        remote_key = self.handshake.remote_key
        assert remote_key is not None
        expected = add_addr_hmac(remote_key, self.handshake.local_key, option.address_id,
                                 option.address, option.port)
        if option.hmac != expected:
            self.counters["AddAddrDrop"] += 1
            return False
        self.counters["AddAddr"] += 1
        self.pending_echo.append(AddAddr(address_id=option.address_id, address=option.address,
                                         port=option.port, echo=True))
        context.tcp.send_ack(now, context)  # the echo
        known = self.remote_addresses.get(option.address_id)
        self.remote_addresses[option.address_id] = (option.address, option.port)
        if known is None:
            self.effects.address_announced(option.address_id, option.address, option.port, now)
        return False

    def on_remove_addr(self, context: SubflowContext, option: RemoveAddr,
                       segment: TcpSegment, offset: int, now: float) -> bool:
        """REMOVE_ADDR option handler: forget the addresses, reset subflows to them."""
        for address_id in option.address_ids:
            self.counters["RmAddr"] += 1
            self.remote_addresses.pop(address_id, None)
            self.effects.address_removed(address_id)
            for other in list(self.live_subflows):
                if other.remote_address_id == address_id and not other.tcp.is_closed:
                    self.counters["RmSubflow"] += 1
                    self.effects.reset_subflow(other, now, [MpTcpRst(MPTCPRST_UNSPECIFIED)],
                                               "removed")
        return False

    def on_mp_prio(self, context: SubflowContext, option: MpPrio, segment: TcpSegment,
                   offset: int, now: float) -> bool:
        """MP_PRIO option handler: the peer's backup wish for this subflow."""
        self.counters["MPPrioRx"] += 1
        context.backup_remote = option.backup
        return False
