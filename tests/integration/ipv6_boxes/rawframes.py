"""Raw Ethernet frames in and out of a namespace, run there by `ip netns exec` (the tests'
helper: a process cannot enter a namespace for one socket before Python 3.12's os.setns).

    rawframes.py send IFACE      < hex frames, one per line
    rawframes.py sniff IFACE SECONDS ETHERTYPE COUNT  > hex frames received, one per line
        ("ready" first; it stops after COUNT frames or SECONDS)
"""

from __future__ import annotations

import select
import socket
import sys
import time

ETH_P_ALL = 0x0003


def send(interface: str) -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((interface, 0))
        for line in sys.stdin:
            if line.strip():
                sock.send(bytes.fromhex(line.strip()))


def _neighbour_noise(frame: bytes) -> bool:
    """ICMPv6 (neighbour discovery, MLD) and IPv6 hop-by-hop (MLD): not what a test sent."""
    return frame[12:14] == b"\x86\xdd" and frame[20] in (0, 58)


def sniff(interface: str, seconds: float, ethertype: int, count: int) -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as sock:
        sock.bind((interface, 0))
        print("ready", flush=True)
        deadline = time.monotonic() + seconds
        seen = 0
        while seen < count and (left := deadline - time.monotonic()) > 0:
            if not select.select([sock], [], [], left)[0]:
                break
            frame, address = sock.recvfrom(65535)
            if address[2] == socket.PACKET_OUTGOING:
                continue
            if int.from_bytes(frame[12:14], "big") == ethertype and not _neighbour_noise(frame):
                print(frame.hex(), flush=True)
                seen += 1


if __name__ == "__main__":
    if sys.argv[1] == "send":
        send(sys.argv[2])
    else:
        sniff(sys.argv[2], float(sys.argv[3]), int(sys.argv[4], 0), int(sys.argv[5]))
