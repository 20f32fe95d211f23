"""The python stack's limit on its own interface queue, against the real kernel.

The driver reads how many of its frames still sit in the host's qdiscs (SIOCOUTQ on the raw
send socket) and the stack queues no more than `loop.LOCAL_QUEUE_FRAMES` per address, as Linux's TCP
Small Queues keeps a TCP socket to a few frames. On two_path the 100 Mbit/s shaping is on the
client's own interfaces, so without the limit the python client overflowed them (hundreds of
drops in each 10 s run, where the kernel client had none).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, tc)")

QUEUED_FRAMES_SCRIPT = """
import sys
from testbed.mptcp.driver.packet_io import PacketIO, PortFilter
io = PacketIO(["10.9.0.1"], PortFilter([(5201, 5201)]))
header = bytes.fromhex("450005dc00000000400600000a0900010a090002")
for _ in range(20):
    io.send("10.9.0.1", "10.9.0.2", header + bytes(1480))
print(io.queued_frames("10.9.0.1"))
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def test_queued_frames_is_what_the_kernel_still_holds() -> None:
    netns = f"tb-lq-{uuid.uuid4().hex[:6]}"
    _ip("netns", "add", netns)
    try:
        _ip("-n", netns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        _ip("-n", netns, "addr", "add", "10.9.0.1/24", "dev", "v0")
        for dev in ("v0", "v1", "lo"):
            _ip("-n", netns, "link", "set", dev, "up")
        _ip("-n", netns, "neigh", "add", "10.9.0.2", "lladdr", "02:00:00:00:00:02", "dev", "v0")
        # 8 kbit/s: the 20 frames stay queued but for the first ones the bucket lets out
        subprocess.run(["tc", "-n", netns, "qdisc", "add", "dev", "v0", "root", "handle", "1:", "htb",
                        "default", "1"], check=True, timeout=10)
        subprocess.run(["tc", "-n", netns, "class", "add", "dev", "v0", "parent", "1:", "classid",
                        "1:1", "htb", "rate", "8kbit"], check=True, capture_output=True, timeout=10)
        out = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", QUEUED_FRAMES_SCRIPT],
                             capture_output=True, text=True, timeout=30,
                             cwd=Path(__file__).resolve().parents[3])
        assert out.returncode == 0, out.stderr[-2000:]
        backlog = subprocess.run(["tc", "-n", netns, "-s", "qdisc", "show", "dev", "v0"],
                                 capture_output=True, text=True, timeout=10).stdout
        held = int(backlog.split(" backlog ")[1].split()[1].rstrip("p"))
    finally:
        _ip("netns", "del", netns)
    assert 15 <= held <= 20, backlog
    assert int(out.stdout) == held  # every queued frame counted, one per full-sized frame


def test_the_python_sender_does_not_overflow_its_own_shaped_interfaces(tmp_path: Path) -> None:
    spec = tmp_path / "local_queue.toml"
    spec.write_text("""
name = "local_queue"
seed = 2
[topology]
name = "two_path"
[topology.params]
rate_mbit = 100
delay_ms = 0
[[endpoints]]
role = "server"
stack = "kernel"
[[endpoints]]
role = "client"
stack = "python"
[traffic]
seconds = 3
direction = "upload"
[mptcp]
subflows = 2
client_subflow_endpoints = true
""")
    out_dir = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "run", str(spec), "--out", str(out_dir)],
                          capture_output=True, text=True, timeout=180,
                          cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out_dir / "result.json").read_text())
    connection = result["connections"][0]
    assert connection["integrity"] == "ok"
    assert all(subflow["bytes"] > 1_000_000 for subflow in connection["subflows"])
    client_queues = {entry["interface"]: entry["qdiscs"] for path in result["shaping"].values()
                     for entry in path if entry["interface"].startswith("client-")}
    assert set(client_queues) == {"client-eth0", "client-eth1"}
    for interface, qdiscs in client_queues.items():
        assert all(q["dropped"] == 0 for q in qdiscs), (interface, qdiscs)
        assert all(q["sent_packets"] > 10_000 for q in qdiscs), (interface, qdiscs)
