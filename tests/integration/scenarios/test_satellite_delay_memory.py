"""The userspace delay stage holding tens of megabytes (issue 19 point 2): its memory, measured.

A satellite path of 3 s one way at 60 Mbit/s holds about 22 MB in the bump's delay line. A UDP
flood at that rate goes from ns A through the real inline process (testbed.inline) to ns C;
the bump's RSS is read from /proc while the line is full. Each held frame should cost about
its own size (a bytes object in a deque, no copy per frame), and a second flood of the same
size after the line drained should reuse that memory, not add to it (no leak).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.inline.control import InlineControl
from testbed.inline.lab import A_ADDR, C_ADDR, LineLab

if os.geteuid() != 0 or shutil.which("ip") is None:
    pytest.skip("needs root and iproute2 for network namespaces", allow_module_level=True)

pytestmark = [pytest.mark.root]
DELAY_MS, RATE_MBIT, FLOOD_S, FRAME = 3000, 60, 3.0, 1514
# paced sendto of 1472-byte datagrams (1514-byte frames) at argv[1] Mbit/s for argv[2] s
FLOOD = ("import socket, sys, time\n"
         "rate = float(sys.argv[1]) * 1e6 / 8; seconds = float(sys.argv[2])\n"
         "out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); payload = bytes(1472)\n"
         "start = time.monotonic(); sent = 0\n"
         "while time.monotonic() - start < seconds:\n"
         "    wait = start + sent * 1514 / rate - time.monotonic()\n"
         "    if wait > 0: time.sleep(wait)\n"
         "    out.sendto(payload, (sys.argv[3], 9)); sent += 1\n"
         "print(sent)\n")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def pin_neighbours(lab: LineLab) -> None:
    """ARP across a 6 s round trip would fail: A and C know each other's MAC from the start."""
    ends = ((lab.a, "a-eth0", A_ADDR), (lab.c, "c-eth0", C_ADDR))
    macs = {ns: json.loads(lab.sh(ns, "ip", "-j", "link", "show", dev))[0]["address"] for ns, dev, _ in ends}
    for (ns, dev, _address), (peer_ns, _peer_dev, peer_address) in zip(ends, ends[::-1], strict=True):
        lab.sh(ns, "ip", "neigh", "replace", peer_address, "lladdr", macs[peer_ns], "dev", dev,
               "nud", "permanent")


def flood_and_sample(lab: LineLab, pid: int, control: InlineControl) -> tuple[int, int, int]:
    """(peak RSS KiB, frames sent, frames held at most) for one flood, sampled until it drained."""
    flood = lab.spawn(lab.a, [sys.executable, "-c", FLOOD, str(RATE_MBIT), str(FLOOD_S), C_ADDR],
                      stdout=subprocess.PIPE)
    peak = 0
    deadline = time.monotonic() + FLOOD_S + DELAY_MS / 1000 + 1.5
    while time.monotonic() < deadline:
        peak = max(peak, rss_kib(pid))
        time.sleep(0.2)
    sent = int(flood.communicate(timeout=10)[0])
    delay = control.stats()["upstream"]["delay"]
    assert delay["dropped_queue_full"] == 0, delay
    return peak, sent, delay["max_depth"]


def test_the_delay_stage_holds_22_mb_at_about_their_size_and_reuses_it(tmp_path: Path) -> None:
    with LineLab() as lab:
        config = tmp_path / "config.json"
        config.write_text(json.dumps({"seed": 1, "delay": {"both": {"delay_ms": DELAY_MS,
                                                                     "rate_mbit": RATE_MBIT}}}))
        control_path = str(tmp_path / "control.sock")
        bump = lab.spawn(lab.b, [sys.executable, "-m", "testbed.inline", "--left", lab.left,
                                 "--right", lab.right, "--control", control_path, "--config", str(config)],
                         stderr=subprocess.DEVNULL)
        control = InlineControl(control_path)
        control.wait_ready()
        pin_neighbours(lab)
        base = rss_kib(bump.pid)
        first_peak, sent, held = flood_and_sample(lab, bump.pid, control)
        second_peak, _sent, _held = flood_and_sample(lab, bump.pid, control)
    held_kib = held * FRAME / 1024
    growth = first_peak - base
    print(f"\ndelay stage, {DELAY_MS} ms at {RATE_MBIT} Mbit/s: {held} of {sent} frames held at once "
          f"({held_kib / 1024:.1f} MiB of frames); RSS {base} KiB -> {first_peak} KiB "
          f"(+{growth / 1024:.1f} MiB, {growth / held_kib:.2f} x the frames), "
          f"second flood peak {second_peak} KiB")
    assert held >= 0.9 * sent  # the whole flood was in the line at once (3 s flood < 3 s delay)
    assert held_kib > 18 * 1024
    assert growth < 1.5 * held_kib  # about a frame's size per frame: nothing copied or kept twice
    assert second_peak - first_peak < 0.1 * held_kib  # the drained memory is reused, not leaked
