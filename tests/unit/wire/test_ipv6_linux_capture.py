"""The running kernel as arbiter, again: scripts/capture_ipv6_vectors.py makes a fresh capture,
which must yield the same kinds of vectors as the committed fixture. Every TCP one must
re-encode byte-exact with a good checksum, and the ADD_ADDR HMACs must match our crypto with
this run's keys (new keys each run, so nothing is replayed). Needs root and kernel MPTCP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.wire import AddAddr, MpCapable, add_addr_hmac
from testbed.wire.ipv6 import decode_ipv6, decode_packet_v6, encode_packet_v6, verify_checksums_v6

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[3]
COMMITTED = json.loads((Path(__file__).parent / "vectors" / "ipv6_linux.json").read_text())


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "ethtool", "tcpdump", "ping"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not Path("/proc/sys/net/mptcp/enabled").exists():
        return "kernel without MPTCP"
    if not Path("/proc/sys/net/ipv6").exists():
        return "kernel without IPv6"
    return None


def test_fresh_linux_capture_matches_the_codec(tmp_path: Path) -> None:
    reason = _missing()
    if reason is not None:
        pytest.skip(reason)
    out = tmp_path / "vectors.json"
    script = subprocess.Popen([sys.executable, str(REPO / "scripts/capture_ipv6_vectors.py"),
                               "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        stdout, stderr = script.communicate(timeout=120)
    finally:
        if script.poll() is None:
            script.terminate()  # its SIGTERM handler removes the namespaces
            script.wait(timeout=30)
    assert script.returncode == 0, stderr
    fresh = json.loads(out.read_text())
    assert {v["name"] for v in fresh["vectors"]} == {v["name"] for v in COMMITTED["vectors"]}
    leftovers = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    removed = stdout.split("namespaces removed:")[1].splitlines()[0].split()
    assert len(removed) == 2 and not any(name in leftovers for name in removed)
    vectors = {vector["name"]: bytes.fromhex(vector["hex"]) for vector in fresh["vectors"]}
    for name, raw in vectors.items():
        if name.startswith("fragment"):
            assert decode_ipv6(raw)[0].extensions[0].kind == 44
            continue
        assert encode_packet_v6(decode_packet_v6(raw)) == raw, name
        assert verify_checksums_v6(raw), name
    ack = decode_packet_v6(vectors["mp_capable_ack"]).tcp.find(MpCapable)
    assert isinstance(ack, MpCapable) and ack.receiver_key is not None
    for name in ("add_addr_v6", "add_addr_v6_port"):
        option = decode_packet_v6(vectors[name]).tcp.find(AddAddr)
        assert isinstance(option, AddAddr) and ":" in option.address
        assert option.hmac == add_addr_hmac(ack.receiver_key, ack.sender_key,  # server sends
                                            option.address_id, option.address, option.port)
