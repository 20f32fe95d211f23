"""`python -m testbed.mptcp.driver.iobench`: packets/s of the three ways a userspace
stack can exchange IPv4 packets with a namespace, to choose the driver's I/O by measurement.
Output: per "sender->receiver" pair, the packets/s the sender wrote and the receiver read.

Two throw-away namespaces joined by a veth (offloads off, as in testbed hosts). For each
method, a sender blasts MTU-sized TCP packets for `--seconds` and a receiver in the other
namespace counts what it reads:
- send: raw IPv4 socket with IP_HDRINCL; AF_PACKET SOCK_DGRAM (next-hop MAC given); TUN
  write (the kernel routes the packet out of the veth, so the sender namespace forwards);
- receive: AF_PACKET SOCK_DGRAM; raw IPv4 socket (IPPROTO_TCP: gets a copy of every TCP
  packet); TUN read (the receiver namespace routes the destination into the tun device).
Only the namespaces it made are deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ADDR_A, ADDR_B, TUN_NET = "10.77.0.1", "10.77.0.2", "10.77.9.0/24"

_SENDER = r"""
import fcntl, os, socket, struct, sys, time
method, dst, mac, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
from testbed.wire import encode_packet
from testbed.wire.types import Packet, TcpSegment
seg = TcpSegment(src_port=40000, dst_port=9, seq=1, ack=1, flags=0x10, window=100, options=[],
                 payload=bytes(1460))
raw = encode_packet(Packet(src="10.77.0.1" if method != "tun" else "10.77.8.1", dst=dst, tcp=seg))
if method == "raw":
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    send = lambda: s.sendto(raw, (dst, 0))
elif method == "packet":
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
    addr = ("va", 0x0800, 0, 0, bytes.fromhex(mac.replace(":", "")))
    send = lambda: s.sendto(raw, addr)
else:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", b"tbtun", 0x0001 | 0x1000))
    os.system("ip addr add 10.77.8.1/24 dev tbtun; ip link set tbtun up")
    send = lambda: os.write(fd, raw)
count, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(64):
        try:
            send(); count += 1
        except OSError:
            pass
print(count / seconds)
"""

_RECEIVER = r"""
import fcntl, os, select, socket, struct, sys, time
method, seconds = sys.argv[1], float(sys.argv[2])
if method == "packet":
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800)); read = lambda: s.recv(65536)
    fd = s
elif method == "raw":
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    read = lambda: s.recv(65536); fd = s
else:
    tfd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(tfd, 0x400454CA, struct.pack("16sH", b"tbtun", 0x0001 | 0x1000))
    os.system("ip link set tbtun up; ip route add 10.77.9.0/24 dev tbtun")
    read = lambda: os.read(tfd, 65536); fd = tfd
print("ready", flush=True)
count, start = 0, None
while True:
    r, _, _ = select.select([fd], [], [], 1.0)
    if not r:
        break
    read(); count += 1
    if start is None:
        start = time.monotonic()
    if time.monotonic() - start > seconds:
        break
print(count / max(time.monotonic() - (start or time.monotonic()), 1e-9))
"""


def _sh(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def measure(seconds: float = 1.0) -> dict[str, dict[str, float]]:
    tag = f"{os.getpid() % 100000}"
    a, b = f"tbioA{tag}", f"tbioB{tag}"
    made: list[str] = []
    results: dict[str, dict[str, float]] = {}
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    try:
        for ns in (a, b):
            _sh("ip", "netns", "add", ns)
            made.append(ns)
        _sh("ip", "link", "add", "va", "netns", a, "type", "veth", "peer", "name", "vb", "netns", b)
        for ns, dev, addr in ((a, "va", ADDR_A), (b, "vb", ADDR_B)):
            _sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _sh("ip", "-n", ns, "link", "set", dev, "up")
            _sh("ip", "netns", "exec", ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off")
            _sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1",
                "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
        mac_b = json.loads(_sh("ip", "-j", "-n", b, "link", "show", "vb"))[0]["address"]
        _sh("ip", "-n", a, "neigh", "replace", ADDR_B, "lladdr", mac_b, "dev", "va")
        _sh("ip", "-n", a, "route", "add", TUN_NET, "via", ADDR_B)
        # nothing listens: drop the packets before TCP so the kernel does not answer with RSTs
        _sh("ip", "netns", "exec", b, "nft", "add table ip tbio; add chain ip tbio in "
            "{ type filter hook input priority 0; }; add rule ip tbio in tcp dport 9 drop")
        plan = [("raw", "packet"), ("packet", "packet"), ("tun", "packet"), ("raw", "raw"), ("raw", "tun")]
        for sender, receiver in plan:
            if receiver == "raw":  # a raw socket reads after the input hook: no drop rule then
                _sh("ip", "netns", "exec", b, "nft", "flush table ip tbio")
            dst = "10.77.9.9" if receiver == "tun" else ADDR_B
            rx = subprocess.Popen(["ip", "netns", "exec", b, sys.executable, "-c", _RECEIVER, receiver,
                                   str(seconds)], stdout=subprocess.PIPE, text=True, env=env)
            assert rx.stdout is not None
            rx.stdout.readline()
            tx = subprocess.run(["ip", "netns", "exec", a, sys.executable, "-c", _SENDER, sender, dst, mac_b,
                                 str(seconds + 0.5)], capture_output=True, text=True, env=env, check=True)
            received = float(rx.communicate(timeout=seconds + 10)[0].strip() or 0)
            results[f"{sender}->{receiver}"] = {"written_pps": round(float(tx.stdout.strip())),
                                                "received_pps": round(received)}
            time.sleep(0.2)
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.mptcp.driver.iobench")
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    print(json.dumps(measure(args.seconds), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
