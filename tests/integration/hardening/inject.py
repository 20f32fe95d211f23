"""Send malformed TCP segments with a raw socket: run inside a test namespace.

    python inject.py SRC DST PORT COUNT

Each segment has valid IPv4 headers (routers forward it) and a TCP header the codec refuses:
a data offset below 5 words, a DSS option of length 3, an option running past the header,
a data offset past the end of the packet. Prints how many were sent.
"""

from __future__ import annotations

import socket
import struct
import sys
import time


def segments(src: str, dst: str, port: int) -> list[bytes]:
    def packet(tcp: bytes) -> bytes:
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0,
                             socket.inet_aton(src), socket.inet_aton(dst))
        return header + tcp

    def tcp(offset_words: int, options: bytes, payload: bytes = b"") -> bytes:
        return struct.pack("!HHIIBBHHH", 40000, port, 1, 1, offset_words << 4, 0x10, 1000, 0,
                           0) + options + payload

    return [
        packet(tcp(3, b"")),  # data offset below the header
        packet(tcp(9, b"\x01\x01\x08\x0a" + bytes(8) + b"\x1e\x03\x20\x00")),  # DSS length 3
        packet(tcp(6, b"\x1e\x20\x20\x00")),  # an MPTCP option of 32 bytes in a 4-byte area
        packet(tcp(15, b"\x01\x01\x01\x01")),  # data offset past the end of the packet
    ]


def main() -> int:
    src, dst, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sent = 0
    kinds = segments(src, dst, port)
    for index in range(count):
        sock.sendto(kinds[index % len(kinds)], (dst, 0))
        sent += 1
        time.sleep(0.001)
    print(sent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
