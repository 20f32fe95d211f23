"""The leg chooser: a socket the kernel will not give rings falls back, saying why."""

from __future__ import annotations

import socket

from testbed.inline.ring import SocketLeg, ring_leg


def test_without_rings_a_fresh_socket_is_used_and_the_reason_is_kept() -> None:
    opened: list[socket.socket] = []

    def open_socket() -> socket.socket:  # a UDP socket has no PACKET_MMAP rings
        opened.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        return opened[-1]

    leg = ring_leg(open_socket, "lo")
    try:
        assert isinstance(leg, SocketLeg)
        assert leg.io.startswith("socket (no PACKET_MMAP rings on lo: ")
        assert len(opened) == 2 and opened[0].fileno() == -1  # the half-set-up one is closed
        assert leg.fileno() == opened[1].fileno() and leg.receive_drops() == 0
    finally:
        leg.close()
