"""The stack driver also waits on a driver app's own sockets (`readable()`), so the python-stack
proxy's TCP sockets to the server wake its loop; an app without it is waited for as before."""

from __future__ import annotations

import random
import socket

import pytest

from testbed.mptcp.config import StackConfig
from testbed.mptcp.driver import loop
from testbed.mptcp.host import MptcpHost


class QuietIO:
    """A PacketIO stand-in with one socket to wait on and no packets."""

    def __init__(self, sock: socket.socket) -> None:
        self.readable = [sock]
        self.tx: dict[str, socket.socket] = {}  # no raw send sockets: no local queue to read

    def receive(self, limit: int) -> list[bytes]:
        return []

    def send_packet(self, packet: object) -> bool:
        return True

    def stats(self) -> dict:
        return {}


class App:
    def __init__(self, own: list[socket.socket] | None) -> None:
        self.steps = 0
        if own is not None:
            self.readable = lambda: own

    @property
    def finished(self) -> bool:
        return self.steps >= 3

    def on_event(self, event: object, now: float) -> None:
        pass

    def step(self, now: float) -> float | None:
        self.steps += 1
        return None


@pytest.mark.parametrize("with_own_socket", [True, False])
def test_select_gets_the_apps_sockets_only_when_it_has_them(with_own_socket: bool,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    packet_side, _packet_peer = socket.socketpair()
    app_side, _app_peer = socket.socketpair()
    waited: list[list] = []

    def fake_select(read: list, write: list, error: list, timeout: float) -> tuple[list, list, list]:
        waited.append(list(read))
        return [], [], []

    monkeypatch.setattr(loop.select, "select", fake_select)
    host = MptcpHost(addresses=["10.0.0.1"], config=StackConfig(), rng=random.Random(1), now=0.0)
    app = App([app_side] if with_own_socket else None)
    loop.StackDriver(host, QuietIO(packet_side)).run(app, stop=lambda: False, linger_s=0.0)  # type: ignore[arg-type]
    assert waited, "the driver never waited"
    expected = [packet_side, app_side] if with_own_socket else [packet_side]
    assert all(read == expected for read in waited)
    for sock in (packet_side, _packet_peer, app_side, _app_peer):
        sock.close()
