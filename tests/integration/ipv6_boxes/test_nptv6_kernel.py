"""The nptv6 box against the kernel's own NPTv6 (ip6tables SNPT/DNPT), byte for byte.

Three namespaces, inside (a) - router (b) - outside (c). The router translates with the
kernel's SNPT on the way out and DNPT on the way in, for a /48 and a /64 prefix pair. The same
crafted TCP packets (MPTCP options, random and edge-case interface identifiers) are sent through
the router and through the box; every packet the kernel forwards must equal the box's output,
byte for byte, once the hop limit the router decrements is accounted for; a packet the kernel
drops (no word can carry the adjustment), the box must drop too.
"""

from __future__ import annotations

import ipaddress
import os
import random
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from middleboxes.contract import Direction
from middleboxes.nptv6 import prefix_adjustment
from middleboxes.registry import build_middlebox
from testbed.command import run_command
from testbed.wire.ipv6 import Ipv6Extension, Ipv6Packet, decode_packet_v6, encode_packet_v6
from testbed.wire.types import ACK, PSH, SYN, AddAddr, Dss, MpCapable, TcpOption, TcpSegment
from tests.integration.live_checks import live_problem

RAWFRAMES = Path(__file__).with_name("rawframes.py")
MAC = {"a": "02:00:00:00:0a:01", "b_in": "02:00:00:00:0b:01", "b_out": "02:00:00:00:0b:02",
       "c": "02:00:00:00:0c:01"}
PAIRS = [  # (inside, outside): a /48 and a /64, with prefix sums far apart
    ("fd00:10::/48", "fd00:99:abcd::/48"),
    ("fd00:20:0:1::/64", "fd00:98:7:5::/64"),
]
OUTSIDE_PEER = "fd00:2::4"


def _problem() -> str | None:
    return live_problem(("ip", "ip6tables"), mptcp=False)


pytestmark = [pytest.mark.root, pytest.mark.skipif(_problem() is not None, reason=str(_problem()))]


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


class NptRouter:
    """The three namespaces with the kernel's SNPT/DNPT rules on b; removed on exit."""

    def __init__(self) -> None:
        # named like testbed.inline.lab's namespaces, so `testbed clean` removes leftovers
        tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
        self.ns = {end: f"tbtest-{tag}-{end}" for end in "abc"}
        self.created: list[str] = []

    def sh(self, end: str, *argv: str) -> None:
        run_command(["ip", "netns", "exec", self.ns[end], *argv], what="nptv6 lab set-up")

    def build(self) -> None:
        a, b, c = self.ns["a"], self.ns["b"], self.ns["c"]
        for name in (a, b, c):
            run_command(["ip", "netns", "add", name], what="nptv6 lab set-up")
            self.created.append(name)
            self.sh(name[-1], "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.default.accept_ra=0")
        run_command(["ip", "-n", b, "link", "add", "in0", "address", MAC["b_in"], "type", "veth",
                     "peer", "name", "eth0", "address", MAC["a"], "netns", a])
        run_command(["ip", "-n", b, "link", "add", "out0", "address", MAC["b_out"], "type",
                     "veth", "peer", "name", "eth0", "address", MAC["c"], "netns", c])
        for end, device in (("a", "eth0"), ("b", "in0"), ("b", "out0"), ("c", "eth0")):
            self.sh(end, "ip", "link", "set", device, "up")
        self.sh("b", "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        self.sh("b", "ip", "addr", "add", "fd00:1::2/64", "dev", "in0", "nodad")
        self.sh("b", "ip", "addr", "add", "fd00:2::2/64", "dev", "out0", "nodad")
        self.sh("b", "ip", "neigh", "replace", "fd00:1::1", "lladdr", MAC["a"], "dev", "in0",
                "nud", "permanent")
        self.sh("b", "ip", "neigh", "replace", OUTSIDE_PEER, "lladdr", MAC["c"], "dev", "out0",
                "nud", "permanent")
        self.sh("b", "ip", "route", "add", "default", "via", OUTSIDE_PEER, "dev", "out0")
        for inside, outside in PAIRS:
            self.sh("b", "ip", "route", "add", inside, "via", "fd00:1::1", "dev", "in0")
            self.sh("b", "ip6tables", "-t", "mangle", "-A", "POSTROUTING", "-s", inside, "-o",
                    "out0", "-j", "SNPT", "--src-pfx", inside, "--dst-pfx", outside)
            self.sh("b", "ip6tables", "-t", "mangle", "-A", "PREROUTING", "-d", outside, "-i",
                    "out0", "-j", "DNPT", "--src-pfx", outside, "--dst-pfx", inside)

    def close(self) -> None:
        for name in reversed(self.created):
            run_command(["ip", "netns", "del", name], check=False)
        self.created.clear()

    def through(self, frames: list[bytes], send_end: str, receive_end: str,
                expected: int) -> list[bytes]:
        """Frames sent into the router from one end, as received at the other."""
        exec_in = ["ip", "netns", "exec"]
        sniffer = subprocess.Popen(
            [*exec_in, self.ns[receive_end], sys.executable, str(RAWFRAMES), "sniff", "eth0",
             "5", "0x86dd", str(expected)], stdout=subprocess.PIPE, text=True)
        try:
            assert sniffer.stdout is not None
            assert sniffer.stdout.readline().strip() == "ready"
            run_command([*exec_in, self.ns[send_end], sys.executable, str(RAWFRAMES), "send",
                         "eth0"], input="".join(frame.hex() + "\n" for frame in frames),
                        what="send frames")
            out, _ = sniffer.communicate(timeout=15)
        finally:
            if sniffer.poll() is None:
                sniffer.kill()
                sniffer.wait()
        return [bytes.fromhex(line) for line in out.split() if line]


@pytest.fixture(scope="module")
def router() -> Iterator[NptRouter]:
    lab = NptRouter()
    try:
        lab.build()
        yield lab
    finally:
        lab.close()


def _iid_cases(prefix: ipaddress.IPv6Network, adjustment: int, rng: random.Random) -> list[int]:
    """Host parts: random ones, and the edge cases RFC 6296 names (a first identifier word of
    0xFFFF, an adjusted word that would come out 0xFFFF, every identifier word 0xFFFF)."""
    host_bits = 128 - prefix.prefixlen
    cases = [rng.getrandbits(host_bits) for _ in range(12)]
    cases += [1, 0xFFFF_0000_0000_0001, 0xFFFF_FFFF_0000_0abc, 0xFFFF_FFFF_FFFF_FFFF]
    if prefix.prefixlen == 48:
        cases += [0xFFFF_FFFF_FFFF_FFFF_FFFF, 0xFFFF << 64 | 5]
    # the word that receives the adjustment, chosen so that it would come out 0xFFFF
    position = 64 if prefix.prefixlen == 48 else 48
    cases.append(((0xFFFF - adjustment) % 0xFFFF) << position | 0x1234)
    return [case & ((1 << host_bits) - 1) for case in cases]


def _packets(inside: str, outside: str, upstream: bool, seed: int) -> list[Ipv6Packet]:
    rng = random.Random(seed)
    prefix, other = (ipaddress.IPv6Network(p) for p in ((inside, outside) if upstream
                                                        else (outside, inside)))
    packets = []
    for number, host in enumerate(_iid_cases(prefix, prefix_adjustment(prefix, other), rng)):
        address = str(prefix.network_address + host)
        options: list[TcpOption] = [MpCapable(version=1, flags=0x81)] if number % 3 == 0 \
            else [Dss(data_ack=rng.getrandbits(32), data_ack_64=False)]
        if number % 4 == 1:
            options.append(AddAddr(address_id=3, address=address, port=None,
                                   hmac=rng.getrandbits(64)))
        segment = TcpSegment(src_port=rng.randint(1024, 65535), dst_port=5201, seq=number,
                             ack=rng.getrandbits(32), flags=SYN if number % 3 == 0 else ACK | PSH,
                             window=64240, options=options,
                             payload=b"" if number % 3 == 0 else rng.randbytes(number * 7))
        extensions = (Ipv6Extension(60, bytes((6, 0, 1, 4, 0, 0, 0, 0))),) if number % 5 == 2 else ()
        src, dst = (address, OUTSIDE_PEER) if upstream else (OUTSIDE_PEER, address)
        packets.append(Ipv6Packet(src, dst, segment, hop_limit=64, flow_label=number,
                                  extensions=extensions))
    return packets


def _frame(packet: Ipv6Packet, dst_mac: str, src_mac: str) -> bytes:
    return _mac(dst_mac) + _mac(src_mac) + b"\x86\xdd" + encode_packet_v6(packet)


@pytest.mark.parametrize("pair", PAIRS, ids=["slash48", "slash64"])
@pytest.mark.parametrize("upstream", [True, False], ids=["snpt", "dnpt"])
def test_box_output_equals_the_kernel_npt_byte_for_byte(router: NptRouter, pair: tuple[str, str],
                                                        upstream: bool) -> None:
    inside, outside = pair
    packets = _packets(inside, outside, upstream, seed=len(inside) + upstream)
    box = build_middlebox("nptv6", {"inside_prefix": inside, "outside_prefix": outside},
                          random.Random(1))
    expected: dict[int, bytes] = {}
    sent = []
    for packet in packets:
        original = encode_packet_v6(packet)
        sent.append(_frame(packet, MAC["b_in" if upstream else "b_out"],
                           MAC["a" if upstream else "c"]))
        outputs = box.process(decode_packet_v6(original),
                              Direction.UPSTREAM if upstream else Direction.DOWNSTREAM, 0.0)
        for out in outputs:
            out.hop_limit -= 1  # the kernel forwards; the box is a bump in the wire
            encoded = encode_packet_v6(out)
            assert (out.tcp.src_port, out.tcp.dst_port) == (packet.tcp.src_port, packet.tcp.dst_port)
            # checksum neutral: the box's recomputed TCP checksum is the one sent
            assert decode_packet_v6(encoded).tcp.checksum == decode_packet_v6(original).tcp.checksum
            expected[packet.tcp.seq] = encoded
    received = router.through(sent, "a" if upstream else "c", "c" if upstream else "a",
                              expected=len(expected))
    got = {decode_packet_v6(frame[14:]).tcp.seq: frame[14:] for frame in received}
    assert sorted(got) == sorted(expected), "the kernel and the box forwarded different packets"
    for seq, data in expected.items():
        assert got[seq] == data, f"packet {seq}: kernel {got[seq].hex()} != box {data.hex()}"
    if ipaddress.IPv6Network(inside).prefixlen > 48:  # an all-0xFFFF identifier: dropped by both
        assert len(expected) == len(packets) - 1
