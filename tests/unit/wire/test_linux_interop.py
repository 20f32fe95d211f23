"""The Linux kernel as arbiter: capture a real kernel MPTCP connection (two paths, ADD_ADDR,
MP_JOIN, DSS checksums on) in throw-away namespaces and check that

- every captured IPv4/TCP packet decodes, and re-encodes to the same bytes (checksums aside);
- our crypto reproduces what the kernel put on the wire: the join token, both join HMACs,
  the ADD_ADDR HMAC and the IDSN of the first data byte;
- our DSS checksum matches the kernel's on every mapping that covers exactly its segment.

Needs root, iproute2, ethtool, tcpdump and a kernel with MPTCP; skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.wire import (
    SYN,
    AddAddr,
    Dss,
    MpCapable,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    Packet,
    add_addr_hmac,
    decode_packet,
    dss_checksum,
    encode_packet,
    join_ack_hmac,
    join_synack_hmac,
    key_to_idsn,
    key_to_token,
)
from testbed.wire.pcap import read_pcap

pytestmark = pytest.mark.root

LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
TAG = f"{os.getpid() % 100000}"
CLIENT_NS = f"wirec{TAG}"
SERVER_NS = f"wires{TAG}"
PATHS = [("10.31.1.1", "10.31.1.2"), ("10.31.2.1", "10.31.2.2")]
PORT = 5201
PAYLOAD_BYTES = 400_000

SERVER_PROGRAM = f"""
import socket
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", {PORT}))
listener.listen(1)
print("ready", flush=True)
connection, _ = listener.accept()
total = 0
while True:
    data = connection.recv(65536)
    if not data:
        break
    total += len(data)
connection.sendall(b"received %d" % total)
connection.close()
"""

CLIENT_PROGRAM = f"""
import socket, time
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
sock.settimeout(20)
sock.connect(("{PATHS[0][1]}", {PORT}))
sock.sendall(b"x" * 1000)
time.sleep(0.5)  # let ADD_ADDR arrive and the second subflow join
block = bytes(range(256)) * 64
sent = 1000
while sent < {PAYLOAD_BYTES}:
    sock.sendall(block)
    sent += len(block)
sock.shutdown(socket.SHUT_WR)
print(sock.recv(100).decode(), sent, flush=True)
sock.close()
"""


def _missing_tools() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "ethtool", "tcpdump"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not Path("/proc/sys/net/mptcp/enabled").exists():
        return "kernel without MPTCP"
    return None


def _wait_until_written(pcap: Path, quiet_s: float = 1.0, limit_s: float = 15.0) -> None:
    """Wait until tcpdump has written everything it captured: on SIGINT it stops without
    draining its ring buffer, so on a loaded machine a fixed short sleep lost the last packets
    (the DATA_FINs). With -U every packet is written as it is read, so a file that has not grown
    for `quiet_s` holds all of them."""
    deadline = time.monotonic() + limit_s
    size, still_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        current = pcap.stat().st_size if pcap.exists() else 0
        if current != size:
            size, still_since = current, time.monotonic()
        elif time.monotonic() - still_since >= quiet_s:
            return
        time.sleep(0.1)


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=20)


def _in_ns(namespace: str, *command: str) -> list[str]:
    return ["ip", "netns", "exec", namespace, *command]


@pytest.fixture(scope="module")
def kernel_capture(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[tuple[bytes, Packet]]]:
    reason = _missing_tools()
    if reason is not None:
        pytest.skip(reason)
    pcap = Path(tmp_path_factory.mktemp("kernel")) / "kernel.pcap"
    created: list[str] = []
    processes: list[subprocess.Popen] = []
    try:
        for namespace in (CLIENT_NS, SERVER_NS):
            _run("ip", "netns", "add", namespace)
            created.append(namespace)
            _run("ip", "-n", namespace, "link", "set", "lo", "up")
            _run(*_in_ns(namespace, "sysctl", "-qw", "net.mptcp.enabled=1"))
        _run(*_in_ns(CLIENT_NS, "sysctl", "-qw", "net.mptcp.checksum_enabled=1"))
        for index, (client_address, server_address) in enumerate(PATHS):
            client_if, server_if = f"c{index}", f"s{index}"
            _run("ip", "-n", CLIENT_NS, "link", "add", client_if, "type", "veth", "peer", "name",
                 server_if, "netns", SERVER_NS)
            for namespace, interface, address in (
                (CLIENT_NS, client_if, client_address), (SERVER_NS, server_if, server_address)
            ):
                _run("ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", interface)
                _run("ip", "-n", namespace, "link", "set", interface, "up")
                # Software checksums and no segmentation offload: the capture then holds
                # exactly what a wire would carry.
                _run(*_in_ns(namespace, "ethtool", "-K", interface, "tx", "off", "tso", "off",
                             "gso", "off", "gro", "off"))
        for namespace in (CLIENT_NS, SERVER_NS):
            _run("ip", "-n", namespace, "mptcp", "limits", "set", "subflows", "2",
                 "add_addr_accepted", "2")
        _run("ip", "-n", SERVER_NS, "mptcp", "endpoint", "add", PATHS[1][1], "dev", "s1", "signal")

        capture = subprocess.Popen(
            _in_ns(CLIENT_NS, "tcpdump", "-i", "any", "-U", "-s", "0", "-B", "65536", "-w", str(pcap),
                   "tcp"),  # a 64 MiB buffer: a full-size capture of a fast transfer must not drop
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        processes.append(capture)
        server = subprocess.Popen(
            _in_ns(SERVER_NS, sys.executable, "-c", SERVER_PROGRAM),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        processes.append(server)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # tcpdump needs a moment before it captures
        client = subprocess.run(
            _in_ns(CLIENT_NS, sys.executable, "-c", CLIENT_PROGRAM),
            capture_output=True, text=True, timeout=60,
        )
        assert client.returncode == 0, client.stderr
        word, received, sent = client.stdout.split()
        assert word == "received" and received == sent, client.stdout
        server.wait(timeout=10)
        _wait_until_written(pcap)
        capture.send_signal(signal.SIGINT)
        capture.wait(timeout=10)
        yield _packets_from(pcap)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        for namespace in created:
            subprocess.run(["ip", "netns", "del", namespace], check=False, capture_output=True)


def _packets_from(pcap: Path) -> list[tuple[bytes, Packet]]:
    """IPv4 packets of a tcpdump `-i any` capture (Linux cooked v1 or v2 headers)."""
    with open(pcap, "rb") as stream:
        header = stream.read(24)
    linktype = int.from_bytes(header[20:24], "little")
    skip = {LINKTYPE_LINUX_SLL: 16, LINKTYPE_LINUX_SLL2: 20}[linktype]
    raws = [record.data[skip:] for record in read_pcap(pcap)]
    return [(raw, decode_packet(raw)) for raw in raws if raw[:1] == b"\x45"]


def _options_of(captured: list, option_type: type) -> list:
    return [(packet, option) for _, packet in captured for option in packet.tcp.options
            if type(option) is option_type]


def test_every_kernel_packet_reencodes_byte_exact(kernel_capture: list) -> None:
    assert len(kernel_capture) > 50
    for raw, packet in kernel_capture:
        again = encode_packet(packet)
        assert len(again) == len(raw)
        # Equal apart from the two checksum fields, which we recompute ...
        assert again[:10] + again[12:36] + again[38:] == raw[:10] + raw[12:36] + raw[38:]
        # ... and which come out identical whenever the kernel's were right.
        assert again == raw


def test_kernel_join_and_add_addr_crypto(kernel_capture: list) -> None:
    capables = _options_of(kernel_capture, MpCapable)
    third_ack = [option for _, option in capables if option.receiver_key is not None]
    assert third_ack, "no MP_CAPABLE with both keys"
    key_client, key_server = third_ack[0].sender_key, third_ack[0].receiver_key
    assert capables[0][1].flags & 0x80, "checksums were not requested"

    (_, join_syn), = _options_of(kernel_capture, MpJoinSyn)
    (_, join_synack), = _options_of(kernel_capture, MpJoinSynAck)
    (_, join_ack), = _options_of(kernel_capture, MpJoinAck)
    assert join_syn.receiver_token == key_to_token(key_server)
    assert join_synack.sender_truncated_hmac == join_synack_hmac(
        key_server, key_client, join_synack.sender_nonce, join_syn.sender_nonce
    )
    assert join_ack.sender_hmac == join_ack_hmac(
        key_client, key_server, join_syn.sender_nonce, join_synack.sender_nonce
    )

    announced = [option for _, option in _options_of(kernel_capture, AddAddr) if not option.echo]
    assert announced and announced[0].address == PATHS[1][1]
    for option in announced:
        assert option.hmac == add_addr_hmac(
            key_server, key_client, option.address_id, option.address, option.port
        )
    echoes = [option for _, option in _options_of(kernel_capture, AddAddr) if option.echo]
    assert echoes and echoes[0].hmac is None


def _subflow_streams(captured: list) -> dict[tuple, dict[int, int]]:
    """Per direction of each subflow: relative sequence number -> byte (first payload byte is
    1), from the captured segments, so mappings spanning several segments can be checked."""
    isns: dict[tuple, int] = {}
    streams: dict[tuple, dict[int, int]] = {}
    for _, packet in captured:
        key = (packet.src, packet.tcp.src_port, packet.dst, packet.tcp.dst_port)
        if packet.tcp.flags & SYN:
            isns[key] = packet.tcp.seq
            continue
        if key not in isns or not packet.tcp.payload:
            continue
        start = (packet.tcp.seq - isns[key]) & 0xFFFFFFFF
        stream = streams.setdefault(key, {})
        for offset, byte in enumerate(packet.tcp.payload):
            stream[start + offset] = byte
    return streams


def test_kernel_idsn_and_dss_checksums(kernel_capture: list) -> None:
    capables = _options_of(kernel_capture, MpCapable)
    key_client = next(option.sender_key for _, option in capables
                      if option.receiver_key is not None)
    mappings = {
        ((packet.src, packet.tcp.src_port, packet.dst, packet.tcp.dst_port), option)
        for packet, option in _options_of(kernel_capture, Dss) if option.dsn is not None
    }
    client_dsns = [option.dsn for key, option in mappings if key[3] == PORT]
    # The first data may ride on MP_CAPABLE's data form instead of a DSS: its DSN is implied to
    # be IDSN + 1 and its data_len bytes come before the first DSS mapping (RFC 8684 §3.1).
    implied = [option.data_len for packet, option in capables
               if packet.tcp.dst_port == PORT and option.data_len]
    first_dss_dsn = key_to_idsn(key_client) + 1 + (implied[0] if implied else 0)
    assert min(client_dsns) == first_dss_dsn, "first data byte is not IDSN + 1"

    streams = _subflow_streams(kernel_capture)
    checked = 0
    for key, option in mappings:
        stream = streams.get(key, {})
        data_len = option.data_len - (1 if option.data_fin else 0)
        if option.data_len == 0:
            continue  # infinite mapping: no checksum coverage to check
        positions = range(option.subflow_seq, option.subflow_seq + data_len)
        if data_len and not all(position in stream for position in positions):
            continue  # part of the mapping was not captured
        payload = bytes(stream[position] for position in positions) if data_len else b""
        assert option.checksum == dss_checksum(
            option.dsn, option.subflow_seq, option.data_len, payload
        ), (key, option)
        checked += 1
    assert checked >= 10, f"only {checked} mappings could be checked"
    assert any(option.data_fin for _, option in mappings), "no DATA_FIN mapping captured"
