"""Capture IPv6 MPTCP packets from the running Linux kernel and write them as hex test vectors.

    sudo .venv/bin/python scripts/capture_ipv6_vectors.py [--out tests/unit/wire/vectors/ipv6_linux.json]

Builds two throw-away namespaces joined by three veth pairs (IPv6 only, no DAD), runs one kernel
MPTCP connection with DSS checksums on, while the server announces a second IPv6 address
(ADD_ADDR without port), withdraws it (REMOVE_ADDR), then announces a third one with a port
(ADD_ADDR with port). Plain TCP connections with sticky extension headers (IPV6_HOPOPTS,
IPV6_DSTOPTS, a routing header with no segments left) and a fragmented ping add the extension
headers Linux can emit. tcpdump in the client namespace records all of it; the frames the
tests need are picked out and written with the kernel release. Everything created is removed
on exit, on Ctrl-C and on SIGTERM; the namespaces and the scratch directory are recorded like a
run's (testbed.net.state), so `testbed clean` removes them after a SIGKILL.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from testbed.command import in_netns, run_command
from testbed.net.state import RunState, delete_netns, new_run_id
from testbed.wire import SYN, AddAddr, Dss, MpCapable, MpJoinSyn, RemoveAddr
from testbed.wire.ipv6 import decode_ipv6, decode_packet_v6
from testbed.wire.pcap import read_pcap

# Named and recorded like a run's (testbed.net.state), so `testbed clean` removes them too if
# this script is killed outright.
RUN_ID = new_run_id()
CLIENT_NS = f"tb-{RUN_ID}-v6client"
SERVER_NS = f"tb-{RUN_ID}-v6server"
# (client address, server address) per veth pair; path 0 carries the initial subflow.
PATHS = [("fd00:31:1::1", "fd00:31:1::2"), ("fd00:31:2::1", "fd00:31:2::2"),
         ("fd00:31:3::1", "fd00:31:3::2")]
PORT = 5201
SIGNAL_PORT = 10100  # the port announced with the third address
EXTENSION_PORT = 5202  # plain TCP with sticky extension headers
PAYLOAD_BYTES = 60_000
IPPROTO_MPTCP = 262
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "tests/unit/wire/vectors/ipv6_linux.json"

SERVER_PROGRAM = f"""
import socket, threading
def serve(listener):
    while True:
        connection, _ = listener.accept()
        total = 0
        while True:
            data = connection.recv(65536)
            if not data:
                break
            total += len(data)
        connection.sendall(b"received %d" % total)
        connection.close()
threads = []
for proto, port in (({IPPROTO_MPTCP}, {PORT}), (0, {EXTENSION_PORT})):
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, proto)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("::", port))
    listener.listen(4)
    threads.append(threading.Thread(target=serve, args=(listener,), daemon=True))
    threads[-1].start()
print("ready", flush=True)
import sys
sys.stdin.read()
"""

CLIENT_PROGRAM = f"""
import socket, sys, time
sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, {IPPROTO_MPTCP})
sock.settimeout(20)
sock.connect(("{PATHS[0][1]}", {PORT}))
sock.sendall(b"x" * 1000)
time.sleep(1.5)  # ADD_ADDRs arrive, subflows join
print("joined", flush=True)
sys.stdin.readline()  # the script withdraws an address meanwhile
block = bytes(range(256)) * 4
sent = 1000
while sent < {PAYLOAD_BYTES}:
    sock.sendall(block)
    sent += len(block)
    time.sleep(0.001)
sock.shutdown(socket.SHUT_WR)
print(sock.recv(100).decode(), sent, flush=True)
sock.close()
"""

# Sticky extension headers on a plain TCP socket (the kernel puts them on every segment).
# Each is next header (filled by the kernel), length in 8-byte units after the first 8, body.
EXTENSION_PROGRAM = f"""
import socket, sys
IPV6_HOPOPTS, IPV6_RTHDR, IPV6_DSTOPTS = 54, 57, 59
PADN4 = bytes((1, 4, 0, 0, 0, 0))
ROUTING_SRH = bytes((0, 2, 4, 0, 0, 0, 0, 0)) + socket.inet_pton(socket.AF_INET6, "{PATHS[0][1]}")
for name, option, value in (("hop_by_hop", IPV6_HOPOPTS, bytes((0, 0)) + PADN4),
                            ("destination_options", IPV6_DSTOPTS, bytes((0, 0)) + PADN4),
                            ("routing", IPV6_RTHDR, ROUTING_SRH)):
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, option, value)
    except OSError as error:
        print(name, "refused", error, flush=True)
        continue
    sock.settimeout(5)
    try:
        sock.connect(("{PATHS[0][1]}", {EXTENSION_PORT}))
        sock.sendall(name.encode())
        sock.shutdown(socket.SHUT_WR)
        print(name, sock.recv(100).decode(), flush=True)
    except OSError as error:
        print(name, "failed", error, flush=True)
    sock.close()
"""


def _setup(state: RunState) -> None:
    for namespace in (CLIENT_NS, SERVER_NS):
        state.add_netns(namespace)  # recorded before it exists
        run_command(["ip", "netns", "add", namespace], what="create namespace")
        for sysctl in ("net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.default.disable_ipv6=0",
                       "net.ipv6.conf.all.seg6_enabled=1", "net.ipv6.conf.default.seg6_enabled=1",
                       "net.mptcp.enabled=1", "net.mptcp.checksum_enabled=1",
                       # With timestamps (12 bytes) an ADD_ADDR of IPv6 + port + HMAC (30 bytes)
                       # does not fit in the 40 bytes of options, and Linux never sends it.
                       "net.ipv4.tcp_timestamps=0"):
            run_command(["sysctl", "-qw", sysctl], netns=namespace, what="set sysctl")
        run_command(["ip", "-n", namespace, "link", "set", "lo", "up"], what="lo up")
    for index, (client_address, server_address) in enumerate(PATHS):
        client_if, server_if = f"c{index}", f"s{index}"
        run_command(["ip", "-n", CLIENT_NS, "link", "add", client_if, "type", "veth", "peer",
                     "name", server_if, "netns", SERVER_NS], what="create veth")
        for namespace, interface, address in ((CLIENT_NS, client_if, client_address),
                                              (SERVER_NS, server_if, server_address)):
            run_command(["sysctl", "-qw", f"net.ipv6.conf.{interface}.seg6_enabled=1"],
                        netns=namespace, what="accept routing headers")
            run_command(["ip", "-n", namespace, "-6", "addr", "add", f"{address}/64", "dev",
                         interface, "nodad"], what="add address")
            run_command(["ip", "-n", namespace, "link", "set", interface, "up"], what="link up")
            # software checksums, no segmentation offload: the capture is what a wire carries
            run_command(["ethtool", "-K", interface, "tx", "off", "tso", "off", "gso", "off",
                         "gro", "off"], netns=namespace, what="offloads off")
    for namespace in (CLIENT_NS, SERVER_NS):
        run_command(["ip", "-n", namespace, "mptcp", "limits", "set", "subflows", "4",
                     "add_addr_accepted", "4"], what="mptcp limits")
    run_command(["ip", "-n", SERVER_NS, "mptcp", "endpoint", "add", PATHS[1][1], "dev", "s1",
                 "id", "2", "signal"], what="signal endpoint")


def _wait_quiet(pcap: Path, quiet_s: float = 1.0, limit_s: float = 15.0) -> None:
    """Until tcpdump (-U) has not written for `quiet_s`: it has flushed what it captured."""
    deadline = time.monotonic() + limit_s
    size, still_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        current = pcap.stat().st_size if pcap.exists() else 0
        if current != size:
            size, still_since = current, time.monotonic()
        elif time.monotonic() - still_since >= quiet_s:
            return
        time.sleep(0.1)


def _capture(pcap: Path, processes: list[subprocess.Popen]) -> list[str]:
    """Run the traffic while tcpdump records it; returns what the extension program printed."""
    capture = subprocess.Popen(
        in_netns(CLIENT_NS, ["tcpdump", "-i", "any", "-U", "-s", "0", "-w", str(pcap), "ip6"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes.append(capture)
    server = subprocess.Popen(in_netns(SERVER_NS, [sys.executable, "-c", SERVER_PROGRAM]),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    processes.append(server)
    assert server.stdout is not None and server.stdin is not None
    if server.stdout.readline().strip() != "ready":
        raise RuntimeError("the server did not start")
    time.sleep(1.0)  # tcpdump needs a moment before it captures
    client = subprocess.Popen(in_netns(CLIENT_NS, [sys.executable, "-c", CLIENT_PROGRAM]),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    processes.append(client)
    assert client.stdout is not None and client.stdin is not None
    if client.stdout.readline().strip() != "joined":
        raise RuntimeError("the MPTCP client did not connect")
    run_command(["ip", "-n", SERVER_NS, "mptcp", "endpoint", "delete", "id", "2"],
                what="withdraw an address (REMOVE_ADDR)")
    # An endpoint added now is announced to the live connection at once (after the REMOVE_ADDR).
    run_command(["ip", "-n", SERVER_NS, "mptcp", "endpoint", "add", PATHS[2][1], "dev", "s2",
                 "id", "3", "port", str(SIGNAL_PORT), "signal"], what="signal endpoint with port")
    time.sleep(1.0)
    client.stdin.write("go\n")
    client.stdin.flush()
    result = client.stdout.readline().split()
    client.wait(timeout=30)
    if len(result) != 3 or result[1] != result[2]:
        raise RuntimeError(f"the MPTCP transfer did not complete: {result}")
    extensions = run_command([sys.executable, "-c", EXTENSION_PROGRAM], netns=CLIENT_NS,
                             what="extension header connections").stdout.splitlines()
    run_command(["ping", "-6", "-c", "1", "-s", "1600", "-W", "2", PATHS[0][1]], netns=CLIENT_NS,
                what="fragmented ping")
    _wait_quiet(pcap)
    capture.send_signal(signal.SIGINT)
    capture.wait(timeout=10)
    server.stdin.close()
    server.wait(timeout=10)
    return extensions


def _frames(pcap: Path) -> list[bytes]:
    """IPv6 packets of a tcpdump `-i any` capture (Linux cooked v1 or v2 headers), outgoing and
    incoming copies of the same packet collapsed to one."""
    with open(pcap, "rb") as stream:
        header = stream.read(24)
    skip = {LINKTYPE_LINUX_SLL: 16, LINKTYPE_LINUX_SLL2: 20}[int.from_bytes(header[20:24], "little")]
    frames: list[bytes] = []
    for record in read_pcap(pcap):
        raw = record.data[skip:]
        if raw[:1] and raw[0] >> 4 == 6 and (not frames or frames[-1] != raw):
            frames.append(raw)
    return frames


def _pick(frames: list[bytes]) -> list[dict[str, str]]:
    """The frames the tests need, first match of each, as {name, note, hex}."""
    wanted: dict[str, tuple[str, bytes]] = {}

    def keep(name: str, note: str, raw: bytes) -> None:
        wanted.setdefault(name, (note, raw))

    for raw in frames:
        header, _ = decode_ipv6(raw)
        kinds = [extension.kind for extension in header.extensions]
        if header.stop_reason is not None:
            if 44 in kinds:
                keep("fragment_non_first", "ICMPv6 echo, second fragment: no upper header", raw)
            continue
        if 44 in kinds:
            keep("fragment_first", "ICMPv6 echo, first fragment", raw)
            continue
        if header.upper_protocol != 6:
            continue
        packet = decode_packet_v6(raw)
        tcp = packet.tcp
        for kind, name in ((0, "hop_by_hop"), (60, "destination_options"), (43, "routing")):
            if kind in kinds and tcp.flags & SYN:
                keep(f"{name}_syn", f"TCP SYN with a {name.replace('_', ' ')} header", raw)
        if kinds:
            continue
        for option in tcp.options:
            if type(option) is MpCapable:
                if tcp.flags == SYN:
                    keep("mp_capable_syn", "MP_CAPABLE SYN (checksum flag set)", raw)
                elif tcp.flags & SYN:
                    keep("mp_capable_synack", "MP_CAPABLE SYN/ACK, server key", raw)
                elif option.receiver_key is not None and option.data_len is None:
                    keep("mp_capable_ack", "MP_CAPABLE third ACK: both keys", raw)
            elif type(option) is AddAddr and not option.echo:
                name = "add_addr_v6_port" if option.port is not None else "add_addr_v6"
                keep(name, f"ADD_ADDR {option.address} port {option.port}, HMAC", raw)
            elif type(option) is AddAddr:
                keep("add_addr_v6_echo", f"ADD_ADDR echo of {option.address}", raw)
            elif type(option) is RemoveAddr:
                keep("remove_addr", f"REMOVE_ADDR ids {list(option.address_ids)}", raw)
            elif type(option) is MpJoinSyn:
                keep("mp_join_syn", "MP_JOIN SYN on an IPv6 subflow", raw)
            elif (type(option) is Dss and option.checksum is not None and option.dsn is not None
                  and tcp.payload and option.data_len == len(tcp.payload)
                  and tcp.dst_port == PORT):
                keep("dss_checksum", "DSS mapping of exactly this payload, with checksum", raw)
    return [{"name": name, "note": note, "hex": raw.hex()} for name, (note, raw) in wanted.items()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="fixture file to write")
    parser.add_argument("--keep-pcap", type=Path, default=None,
                        help="also copy the whole capture there (to look at it with tshark)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("capture_ipv6_vectors: needs root (network namespaces); run it with sudo",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    processes: list[subprocess.Popen] = []
    state = RunState.create(RUN_ID)
    pcap = Path(state.work_dir) / "ipv6.pcap"  # removed with the state, by clean too
    try:
        _setup(state)
        extensions = _capture(pcap, processes)
        vectors = _pick(_frames(pcap))
        if args.keep_pcap is not None:
            shutil.copyfile(pcap, args.keep_pcap)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        for problem in delete_netns(state.netns):
            print(f"capture_ipv6_vectors: {problem}", file=sys.stderr)
        state.remove()
    document = {
        "kernel": platform.release(),
        "made_by": "scripts/capture_ipv6_vectors.py",
        "addresses": {"client": [client for client, _ in PATHS],
                      "server": [server for _, server in PATHS]},
        "extension_programs": extensions,
        "vectors": vectors,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {len(vectors)} vectors to {args.out}: {', '.join(v['name'] for v in vectors)}")
    print(f"namespaces removed: {' '.join(state.netns)}")
    for line in extensions:
        print("  extension connection:", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
