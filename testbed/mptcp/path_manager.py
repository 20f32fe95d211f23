"""Path managers: which extra subflows to open and which addresses to announce.

A path manager only decides; it acts through the connection's public methods
(`open_subflow`, `add_address`) and reads its public state (`local_addresses`,
`remote_addresses`, `live_subflows`, `is_client`): the `ManagedConnection` protocol, so this
module does not import the connection. Chosen by name from `PATH_MANAGERS`.

- fullmesh: the client opens a subflow from each local address to each known remote address
  of the same family
  (the initial one, unless the server set the MP_CAPABLE C flag, and every announced one);
  the server announces its other addresses so a
  client can mesh to them (Linux: client `subflow fullmesh` + server `signal` endpoints).
- ndiffports: the client opens N subflows in total between the initial address pair, each
  from a different source port.
- announce: ADD_ADDR for every local address other than the initial one; no subflows.
- none: nothing.
"""

from __future__ import annotations

from typing import Any, Protocol

from testbed.mptcp.addresses import same_family
from testbed.mptcp.config import StackConfig
from testbed.mptcp.handshake import Handshake
from testbed.mptcp.subflow_context import SubflowContext


class ManagedConnection(Protocol):
    """What a path manager reads and calls on its connection (connection.Connection)."""

    is_client: bool
    config: StackConfig
    local_address: str
    remote_address: str
    remote_port: int
    live_subflows: list[SubflowContext]
    handshake: Handshake  # remote_denies_initial_join: the peer's MP_CAPABLE C flag

    @property
    def local_addresses(self) -> list[str]: ...

    @property
    def remote_addresses(self) -> dict[int, tuple[str, int | None]]: ...


    def can_open_subflow(self) -> bool: ...

    def open_subflow(self, local_address: str, remote_address: str, remote_port: int, *,
                     now: float, backup: bool = False) -> Any: ...

    def add_address(self, address: str, *, now: float | None = None,
                    port: int | None = None) -> int: ...



class PathManager:
    name = "none"

    def on_established(self, connection: ManagedConnection, now: float) -> None:
        """The connection became MPTCP-capable end to end."""

    def on_address_announced(self, connection: ManagedConnection, address_id: int, address: str,
                             port: int | None, now: float) -> None:
        """The peer sent ADD_ADDR."""


class NonePathManager(PathManager):
    name = "none"


def _announce_extra_addresses(connection: ManagedConnection, now: float) -> None:
    for address in connection.local_addresses:
        if address != connection.local_address:
            connection.add_address(address, now=now)


class AnnouncePathManager(PathManager):
    name = "announce"

    def on_established(self, connection: ManagedConnection, now: float) -> None:
        _announce_extra_addresses(connection, now)


class FullmeshPathManager(PathManager):
    name = "fullmesh"

    def on_established(self, connection: ManagedConnection, now: float) -> None:
        if connection.is_client:
            self._mesh(connection, now)
        else:
            _announce_extra_addresses(connection, now)

    def on_address_announced(self, connection: ManagedConnection, address_id: int, address: str,
                             port: int | None, now: float) -> None:
        if connection.is_client:
            self._mesh(connection, now)

    def _mesh(self, connection: ManagedConnection, now: float) -> None:
        existing = {(c.tcp.local_address, c.tcp.remote_address, c.tcp.remote_port)
                    for c in connection.live_subflows if not c.tcp.is_closed}
        initial = (connection.remote_address, connection.remote_port)
        remotes = [initial]
        remotes += [(address, port or connection.remote_port)
                    for address, port in connection.remote_addresses.values()]
        if connection.handshake.remote_denies_initial_join:  # the peer's C flag (RFC 8684 3.1)
            remotes = [remote for remote in remotes if remote != initial]
        for local in connection.local_addresses:
            for remote, port in remotes:
                if (local, remote, port) in existing or not same_family(local, remote):
                    continue  # (an IPv4 address meshes with IPv4 ones, IPv6 with IPv6)
                if not connection.can_open_subflow():
                    return
                connection.open_subflow(local, remote, port, now=now,
                                        backup=local in connection.config.backup_addresses)
                existing.add((local, remote, port))


class NdiffportsPathManager(PathManager):
    name = "ndiffports"

    def on_established(self, connection: ManagedConnection, now: float) -> None:
        if not connection.is_client or connection.handshake.remote_denies_initial_join:
            return  # every ndiffports subflow goes to the initial address/port
        while (len([c for c in connection.live_subflows if not c.tcp.is_closed])
               < connection.config.ndiffports and connection.can_open_subflow()):
            connection.open_subflow(connection.local_address, connection.remote_address,
                                    connection.remote_port, now=now)


PATH_MANAGERS: dict[str, type[PathManager]] = {
    "fullmesh": FullmeshPathManager,
    "ndiffports": NdiffportsPathManager,
    "announce": AnnouncePathManager,
    "none": NonePathManager,
}


def create_path_manager(name: str) -> PathManager:
    try:
        return PATH_MANAGERS[name]()
    except KeyError:
        raise ValueError(f"unknown path manager {name!r}; known: {sorted(PATH_MANAGERS)}") from None
