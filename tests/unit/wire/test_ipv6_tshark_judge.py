"""tshark as an independent judge of the IPv6 encoder: packets with every extension header
kind, an ADD_ADDR of an IPv6 address with port, and a routing header with segments left (whose
TCP checksum must use the final destination, RFC 8200 8.1; Linux did not emit one in the
capture) are written as raw IP and dissected; Wireshark must find the TCP checksums good and
the extension headers and MPTCP fields where we put them."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from testbed.wire import ACK, AddAddr, NoOperation, TcpSegment, add_addr_hmac
from testbed.wire.ipv6 import Ipv6Extension, Ipv6Packet, encode_packet_v6
from testbed.wire.pcap import LINKTYPE_RAW, write_pcap
from testbed.wire.tshark import dissect, problems, tshark_available

pytestmark = pytest.mark.skipif(not tshark_available(), reason="tshark is not installed")

SRC, DST, FINAL = "2001:db8::1", "2001:db8::2", "2001:db8:ffff::9"
KEY_SENDER, KEY_RECEIVER = 0x1A2B3C4D5E6F7081, 0x8877665544332211
ANNOUNCED = "2001:db8:2::2"


def _srh(segments_left: int) -> Ipv6Extension:
    segments = socket.inet_pton(socket.AF_INET6, FINAL) + socket.inet_pton(socket.AF_INET6, DST)
    return Ipv6Extension(43, bytes((0, 4, 4, segments_left, 1, 0, 0, 0)) + segments)


def _packets() -> list[Ipv6Packet]:
    hmac = add_addr_hmac(KEY_SENDER, KEY_RECEIVER, 5, ANNOUNCED, 8080)
    segment = TcpSegment(5201, 40000, 1000, 2000, ACK, 512,
                         [AddAddr(5, ANNOUNCED, 8080, hmac), NoOperation(), NoOperation()],
                         b"payload")
    pad = Ipv6Extension(0, bytes((0, 0, 1, 4, 0, 0, 0, 0)))
    return [
        Ipv6Packet(SRC, DST, segment),
        Ipv6Packet(SRC, DST, segment, extensions=(pad, Ipv6Extension(60, pad.data))),
        Ipv6Packet(SRC, DST, segment, extensions=(_srh(1),)),
        Ipv6Packet(SRC, DST, segment, extensions=(Ipv6Extension(44, bytes(8)),)),
    ]


def test_tshark_accepts_our_ipv6_packets(tmp_path: Path) -> None:
    pcap = tmp_path / "ipv6.pcap"
    write_pcap(pcap, ((index, encode_packet_v6(packet)) for index, packet in enumerate(_packets())),
               LINKTYPE_RAW)
    dissected = dissect(pcap)
    assert len(dissected) == 4
    hmac = str(add_addr_hmac(KEY_SENDER, KEY_RECEIVER, 5, ANNOUNCED, 8080))
    for index, packet in enumerate(dissected):
        assert problems(packet) == [], (index, packet)
        assert packet["tcp.checksum.status"] == ["1"], index  # 1: good
        assert packet["tcp.options.mptcp.ipv6"] == [ANNOUNCED]
        assert packet["tcp.options.mptcp.port"] == ["8080"]
        assert packet["tcp.options.mptcp.addaddrtrunchmac"] == [hmac]
    assert dissected[1]["ipv6.hopopts.nxt"] == ["60"]
    assert dissected[1]["ipv6.dstopts.nxt"] == ["6"]
    assert dissected[2]["ipv6.routing.srh.addr"][0] == FINAL
    # Wireshark sums the final destination too: the checksum differs from the direct packet's
    assert dissected[2]["tcp.checksum"] != dissected[0]["tcp.checksum"]
    assert dissected[3]["ipv6.fraghdr.offset"] == ["0"]
    assert dissected[3]["ipv6.fraghdr.more"] == ["0"]
