"""In-connection signalling (RFC 8684 3.4, 3.5, 3.3.8): ADD_ADDR with HMAC, echo and
retransmission, REMOVE_ADDR, MP_PRIO and MP_FASTCLOSE, as a mixin of Connection.

Signals ride on pure ACKs (ack_options in connection.py picks them up within the option
budget); `_signal_now` sends such an ACK at once so a signal does not wait for traffic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from testbed.mptcp import events
from testbed.mptcp.errors import LocalProtocolError
from testbed.mptcp.scheduler import eligible_subflows
from testbed.wire.crypto import add_addr_hmac
from testbed.wire.types import (
    MPTCPRST_UNSPECIFIED,
    AddAddr,
    MpFastclose,
    MpTcpRst,
    RemoveAddr,
    TcpOption,
)

if TYPE_CHECKING:
    from testbed.mptcp.subflow import Subflow

MPTCP = "mptcp"


class SignallingMixin:
    """Address announcement/removal, backup priority and fast close."""

    def _signal_timers(self, now: float) -> None:
        """Retransmit ADD_ADDRs that were not echoed in time (Linux: once)."""
        for address_id, (option, deadline, tries) in list(self.announced.items()):
            if now < deadline:
                continue
            if tries >= self.config.add_addr_max_retransmits:
                del self.announced[address_id]
                continue
            self.pending_add_addr.append(option)
            self.announced[address_id] = (option, now + self.config.add_addr_timeout_s,
                                          tries + 1)
            self._signal_now(now)

    def _on_fastclose(self, option: MpFastclose, now: float) -> None:
        if option.receiver_key != self.local_key:
            self.counters["MPFastcloseRxIgnored"] += 1
            return
        self.counters["MPFastcloseRx"] += 1
        self._close_connection("fastclose", now, send_rst=True)

    def _on_add_addr(self, subflow: Subflow, option: AddAddr, now: float) -> None:
        if option.echo:
            self.counters["EchoAdd"] += 1
            self.announced.pop(option.address_id, None)
            return
        assert self.remote_key is not None
        expected = add_addr_hmac(self.remote_key, self.local_key, option.address_id,
                                 option.address, option.port)
        if option.hmac != expected:
            self.counters["AddAddrDrop"] += 1
            return
        self.counters["AddAddr"] += 1
        self.pending_echo.append(AddAddr(address_id=option.address_id, address=option.address,
                                         port=option.port, echo=True))
        subflow.send_ack(now)
        known = self.remote_addresses.get(option.address_id)
        self.remote_addresses[option.address_id] = (option.address, option.port)
        if known is None:
            self.host.emit(events.AddressAnnounced(self, option.address_id, option.address,
                                                   option.port))
            self.path_manager.on_address_announced(self, option.address_id, option.address,
                                                   option.port, now)

    def _on_remove_addr(self, option: RemoveAddr, now: float) -> None:
        for address_id in option.address_ids:
            self.counters["RmAddr"] += 1
            self.remote_addresses.pop(address_id, None)
            self.host.emit(events.AddressRemoved(self, address_id))
            for subflow in list(self.subflows):
                if subflow.remote_address_id == address_id and not subflow.is_closed:
                    self.counters["RmSubflow"] += 1
                    subflow.reset(now, [MpTcpRst(MPTCPRST_UNSPECIFIED)], reason="removed")

    def abort(self, now: float | None = None) -> None:
        """MP_FASTCLOSE: RST on every subflow carrying the peer's key (plain RST if TCP)."""
        now = self.last_now if now is None else now
        if self.closed_reason is not None:
            return
        options: list[TcpOption] = []
        if self.mode == MPTCP and self.remote_key is not None:
            options = [MpFastclose(self.remote_key)]
            self.counters["MPFastcloseTx"] += 1
        self.closed_reason = "fastclose"
        for subflow in list(self.subflows):
            subflow.reset(now, options, reason="fastclose")
        self.host.emit(events.ConnectionClosed(self, "fastclose"))
        self.host.connection_closed(self)

    def add_address(self, address: str, *, now: float | None = None,
                    port: int | None = None) -> int:
        """Announce a local address (ADD_ADDR, retransmitted until echoed)."""
        now = self.last_now if now is None else now
        if self.mode != MPTCP or self.remote_key is None:
            raise LocalProtocolError(f"add_address: connection is {self.mode}, not mptcp")
        address_id = self._local_address_id(address)
        if address_id in self.announced:
            return address_id
        option = AddAddr(address_id=address_id, address=address, port=port,
                         hmac=add_addr_hmac(self.local_key, self.remote_key, address_id, address,
                                            port))
        self.pending_add_addr.append(option)
        self.announced[address_id] = (option, now + self.config.add_addr_timeout_s, 0)
        self._signal_now(now)
        return address_id

    def remove_address(self, address: str, *, now: float | None = None) -> None:
        """REMOVE_ADDR for a local address, and close our subflows that use it."""
        now = self.last_now if now is None else now
        if address not in self.local_address_ids:
            raise LocalProtocolError(f"remove_address: {address} has no address id here")
        address_id = self.local_address_ids[address]
        self.announced.pop(address_id, None)
        self.pending_remove.append(address_id)
        self._signal_now(now, avoid_address=address)
        for subflow in list(self.subflows):
            if subflow.local_address == address and not subflow.is_closed:
                subflow.reset(now, [MpTcpRst(MPTCPRST_UNSPECIFIED)], reason="removed")

    def set_backup(self, subflow: Subflow, backup: bool, *, now: float | None = None) -> None:
        """MP_PRIO on that subflow: ask the peer to treat it as (non-)backup."""
        now = self.last_now if now is None else now
        if subflow not in self.subflows:
            raise LocalProtocolError("set_backup: subflow does not belong to this connection")
        subflow.backup_local = backup
        subflow.pending_prio = backup
        subflow.send_ack(now)

    def _signal_now(self, now: float, avoid_address: str | None = None) -> None:
        """Send pending signals on a pure ACK now, preferring a subflow that will survive."""
        usable = eligible_subflows(self.subflows)
        preferred = [s for s in usable if s.local_address != avoid_address]
        if preferred or usable:
            (preferred or usable)[0].send_ack(now)

    def _add_addr_deadline(self) -> float | None:
        if not self.announced:
            return None
        return min(deadline for _, deadline, _ in self.announced.values())
