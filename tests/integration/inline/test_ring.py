"""PACKET_MMAP legs (testbed/inline/ring.py) on a real veth pair: order, content, limits."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from testbed.inline.lab import LineLab
from testbed.inline.ring import slot_bytes

pytestmark = pytest.mark.root

# Runs inside the bump namespace B of a LineLab: b-left carries a RingLeg, b-right's peer is
# in C, so frames are checked on a veth pair we own at both ends: b-left <-> a-eth0 in A.
CHILD = """
import errno, json, socket, struct, sys, time
from testbed.inline.legs import open_leg
from testbed.inline.ring import RingLeg, ring_leg

ETHERTYPE = 0x88B5  # local experimental: nothing else on the link uses it
HEADER = bytes.fromhex("02000000000a" "02000000000b") + struct.pack("!H", ETHERTYPE)

def frame(index, size=100):
    body = struct.pack("!I", index) * (size // 4 + 1)
    return HEADER + body[:size]

def ours(data):
    return len(data) > 14 and data[12:14] == struct.pack("!H", ETHERTYPE)

role = sys.argv[1]
if role == "ring":
    leg = ring_leg(lambda: open_leg("b-left"), "b-left")
    assert isinstance(leg, RingLeg), leg.io
    print("ready", flush=True)
    sys.stdin.readline()  # the peer listens in A now
    # more frames than the TX ring has slots, with no flush in between: the full ring is
    # flushed and waited for inside send_batch
    frames = [frame(i) for i in range(6000)]
    sent, sent_bytes, errors = leg.send_batch(frames)
    leg.flush()
    too_long = frame(0, size=1500 + 4 + 1)  # one byte over the MTU, a VLAN tag allowed
    just_fits = frame(1, size=1500)
    sent2, _, errors2 = leg.send_batch([too_long, bytes(10), just_fits])
    leg.flush()
    # then receive what A sends back
    received, deadline = [], time.monotonic() + 10
    while len(received) < 3000 and time.monotonic() < deadline:
        received += [f for f in leg.receive(256) if ours(f)]
        time.sleep(0.001)
    print(json.dumps({"sent": sent, "bytes": sent_bytes, "errors": [str(e) for e in errors],
                      "sent2": sent2, "errnos2": [e.errno for e in errors2],
                      "received": len(received),
                      "in_order": all(f == frame(i) for i, f in enumerate(received)),
                      "drops": leg.receive_drops(), "truncated": leg.truncated}), flush=True)
else:
    peer = open_leg("a-eth0")
    peer.settimeout(5)
    print("ready", flush=True)
    got = []
    try:
        while len(got) < 6001:
            data = peer.recv(65536)
            if ours(data):
                got.append(data)
    except socket.timeout:
        pass
    expected = [frame(i) for i in range(6000)] + [frame(1, size=1500)]
    for i in range(3000):
        peer.send(frame(i))
    print(json.dumps({"got": len(got), "in_order": got == expected}), flush=True)
"""


def spawn(lab: LineLab, namespace: str, role: str) -> subprocess.Popen[str]:
    process = subprocess.Popen([*lab.exec_prefix(namespace), sys.executable, "-c", CHILD, role],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def test_a_ring_leg_sends_and_receives_every_frame_in_order_and_refuses_what_send_would(
        lab: LineLab) -> None:
    ring = spawn(lab, lab.b, "ring")
    peer = spawn(lab, lab.a, "peer")
    try:
        assert ring.stdin is not None
        ring.stdin.write("go\n")
        ring.stdin.flush()
        ring_out, _ = ring.communicate(timeout=60)
        peer_out, _ = peer.communicate(timeout=60)
    finally:
        for process in (ring, peer):
            process.kill()
    sent, seen = json.loads(ring_out), json.loads(peer_out)
    assert sent["sent"] == 6000 and not sent["errors"] and sent["bytes"] == 6000 * 114
    assert seen == {"got": 6001, "in_order": True}  # every frame, in order, content intact
    # one byte over the MTU and a runt are refused as send() would (EMSGSIZE, EINVAL)
    assert sent["sent2"] == 1 and sent["errnos2"] == [90, 22]
    assert sent["received"] == 3000 and sent["in_order"]
    assert sent["drops"] == 0 and sent["truncated"] == 0


def test_a_slot_holds_the_largest_frame_of_the_mtu() -> None:
    assert slot_bytes(1500) == 2048
    assert slot_bytes(9000) == 16384
    assert slot_bytes(9000) >= 9000 + 14 + 4 + 128
