"""In-connection address signalling (RFC 8684 3.4, 3.5): ADD_ADDR with HMAC, its echo and
retransmission, REMOVE_ADDR, and the address ids on both sides.

`Signalling` owns what was announced and what is still to be sent; the option writer takes
pending signals onto pure ACKs within the option budget (`take_signals`). What a received
signal means for subflows and the path manager is decided by the connection.
"""

from __future__ import annotations

from testbed.mptcp.config import StackConfig
from testbed.wire.crypto import add_addr_hmac
from testbed.wire.tcp_options import encoded_length
from testbed.wire.types import AddAddr, RemoveAddr, TcpOption


class Signalling:
    """Address ids, ADD_ADDR/REMOVE_ADDR pending and announced, and their retransmission."""

    def __init__(self, *, config: StackConfig, counters: dict[str, int],
                 local_address: str) -> None:
        self.config = config
        self.counters = counters
        self.local_address_ids: dict[str, int] = {local_address: 0}
        self.remote_addresses: dict[int, tuple[str, int | None]] = {}  # id -> (address, port)
        self.pending_add_addr: list[AddAddr] = []
        self.pending_echo: list[AddAddr] = []
        self.pending_remove: list[int] = []
        # address id -> (option, retransmission deadline, retransmissions so far)
        self.announced: dict[int, tuple[AddAddr, float, int]] = {}

    def local_address_id(self, address: str) -> int:
        if address not in self.local_address_ids:
            self.local_address_ids[address] = len(self.local_address_ids)
        return self.local_address_ids[address]

    @property
    def pending(self) -> bool:
        return bool(self.pending_echo or self.pending_add_addr or self.pending_remove)

    # ------------------------------------------------------------------ what we send
    def announce(self, address: str, port: int | None, now: float, *, local_key: int,
                 remote_key: int) -> tuple[int, bool]:
        """Queue an ADD_ADDR (retransmitted until echoed): (address id, newly queued)."""
        address_id = self.local_address_id(address)
        if address_id in self.announced:
            return address_id, False
        option = AddAddr(address_id=address_id, address=address, port=port,
                         hmac=add_addr_hmac(local_key, remote_key, address_id, address, port))
        self.pending_add_addr.append(option)
        self.announced[address_id] = (option, now + self.config.add_addr_timeout_s, 0)
        return address_id, True

    def withdraw(self, address_id: int) -> None:
        """Queue a REMOVE_ADDR and stop announcing the address."""
        self.announced.pop(address_id, None)
        self.pending_remove.append(address_id)

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

    def retransmit_due(self, now: float) -> bool:
        """Queue again ADD_ADDRs not echoed in time (Linux: once); True when any was."""
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
    def on_add_addr(self, option: AddAddr, *, local_key: int, remote_key: int) -> str:
        """An ADD_ADDR arrived: "echo" (of ours), "dropped" (bad HMAC), "known" or "new"
        (a new remote address; its echo is queued either way)."""
        if option.echo:
            self.counters["EchoAdd"] += 1
            self.announced.pop(option.address_id, None)
            return "echo"
        expected = add_addr_hmac(remote_key, local_key, option.address_id, option.address,
                                 option.port)
        if option.hmac != expected:
            self.counters["AddAddrDrop"] += 1
            return "dropped"
        self.counters["AddAddr"] += 1
        self.pending_echo.append(AddAddr(address_id=option.address_id, address=option.address,
                                         port=option.port, echo=True))
        known = self.remote_addresses.get(option.address_id)
        self.remote_addresses[option.address_id] = (option.address, option.port)
        return "known" if known is not None else "new"

    def on_remove_addr(self, address_id: int) -> None:
        self.counters["RmAddr"] += 1
        self.remote_addresses.pop(address_id, None)
