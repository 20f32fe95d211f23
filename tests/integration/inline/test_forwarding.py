"""Frames really cross the bump: ARP, ping, and TCP data that arrives intact."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys

import pytest

from testbed.command import CommandFailed
from testbed.inline.lab import A_ADDR, C_ADDR, LineLab

from .conftest import ping

pytestmark = pytest.mark.root

TRANSFER_BYTES = 8 * 1024 * 1024
PORT = 5401

# Receiver in C: accept one connection, hash everything until EOF, print the digest as JSON.
RECEIVER = f"""
import hashlib, json, socket
listener = socket.create_server(("{C_ADDR}", {PORT}))
conn, _ = listener.accept()
digest, total = hashlib.sha256(), 0
while chunk := conn.recv(1 << 16):
    digest.update(chunk); total += len(chunk)
print(json.dumps({{"sha256": digest.hexdigest(), "bytes": total, "peer": _[0]}}))
"""

SENDER = f"""
import random, socket, sys, time
data = random.Random(42).randbytes({TRANSFER_BYTES})
for attempt in range(50):
    try:
        conn = socket.create_connection(("{C_ADDR}", {PORT}), timeout=10)
        break
    except ConnectionRefusedError:
        time.sleep(0.1)
conn.sendall(data)
conn.close()
"""


def transfer(lab: LineLab) -> dict[str, object]:
    """Send TRANSFER_BYTES seeded bytes A -> C; C's digest, byte count and the peer it saw."""
    receiver = lab.spawn(lab.c, [sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE)
    lab.sh(lab.a, sys.executable, "-c", SENDER, timeout_s=60)
    out, _ = receiver.communicate(timeout=30)
    return json.loads(out)


def test_nothing_crosses_without_the_process(lab: LineLab) -> None:
    """The bump's legs are not bridged: the other tests measure the inline process, not luck."""
    with pytest.raises(CommandFailed):
        lab.sh(lab.a, "ping", "-c", "1", "-W", "1", C_ADDR)


def test_arp_and_ping_pass(lab: LineLab, start_bump) -> None:
    bump = start_bump()
    result = ping(lab, count=5, interval_s=0.05)
    assert result.received == 5
    neighbours = json.loads(lab.sh(lab.a, "ip", "-j", "neigh", "show", C_ADDR))
    c_mac = json.loads(lab.sh(lab.c, "ip", "-j", "link", "show", "c-eth0"))[0]["address"]
    assert neighbours and neighbours[0]["lladdr"] == c_mac  # ARP resolved through the bump
    stats = bump.control.stats()
    assert stats["upstream"]["frames_out"] >= 6 and stats["downstream"]["frames_out"] >= 6
    assert stats["upstream"]["send_errors"] == stats["downstream"]["send_errors"] == 0


@pytest.mark.parametrize("mode", [None, "reencode"])
def test_tcp_data_arrives_intact(lab: LineLab, start_bump, mode: str | None) -> None:
    """Plain forwarding, and with every TCP packet decoded and re-encoded by the codec."""
    bump = start_bump(mode=mode)
    result = transfer(lab)
    expected = hashlib.sha256(random.Random(42).randbytes(TRANSFER_BYTES)).hexdigest()
    assert result == {"sha256": expected, "bytes": TRANSFER_BYTES, "peer": A_ADDR}
    stats = bump.control.stats()
    if mode == "reencode":
        assert stats["pipeline"]["reencoded"] > TRANSFER_BYTES // 1500
        assert stats["pipeline"]["undecodable"] == 0
        assert stats["middleboxes"][0]["counters"]["seen"] == stats["pipeline"]["decoded"]


EXPECTED = hashlib.sha256(random.Random(42).randbytes(TRANSFER_BYTES)).hexdigest()


def test_catalogue_rewrite_seq_keeps_kernel_tcp_intact(lab: LineLab, start_bump) -> None:
    """A real catalogue box from the config (registry path): shifted sequence numbers both ways."""
    bump = start_bump({"seed": 3, "middleboxes": [
        {"name": "rewrite_seq", "params": {"direction": "both"}}]})
    assert transfer(lab) == {"sha256": EXPECTED, "bytes": TRANSFER_BYTES, "peer": A_ADDR}
    [box] = bump.control.stats()["middleboxes"]
    assert box["name"] == "rewrite_seq"
    assert box["counters"]["changed"] > TRANSFER_BYTES // 1500


def test_nat_public_address_is_answered_by_the_bump(lab: LineLab, start_bump) -> None:
    """C sees the NAT's public address, ARPs for it, and the bump answers with A's MAC."""
    bump = start_bump({"middleboxes": [
        {"name": "nat", "params": {"public_address": "10.99.0.9"}}]})
    assert transfer(lab) == {"sha256": EXPECTED, "bytes": TRANSFER_BYTES, "peer": "10.99.0.9"}
    a_mac = json.loads(lab.sh(lab.a, "ip", "-j", "link", "show", "a-eth0"))[0]["address"]
    neighbours = json.loads(lab.sh(lab.c, "ip", "-j", "neigh", "show", "10.99.0.9"))
    assert neighbours and neighbours[0]["lladdr"] == a_mac
    assert bump.control.stats()["pipeline"]["arp_answered"] >= 1
