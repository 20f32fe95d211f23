"""The run's capture stops only after writing every packet it captured: a real tcpdump in a
namespace, TCP connections on its loopback, stopped right after the last one."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from testbed.net.capture import CAPTURE_LOG, CAPTURE_PCAP, start_capture, stop_capture
from testbed.wire.pcap import read_pcap

pytestmark = pytest.mark.root


class Namespace:
    """A PopenNode over one bare namespace (the runner's Network is the real one)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def popen(self, node: str, args: list[str], **kwargs: object) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.name, *args], **kwargs)  # type: ignore[call-overload]


def _connect_many(namespace: str, connections: int) -> None:
    """Open and close `connections` TCP connections to a listener, all inside `namespace`."""
    script = ("import socket\n"
              "server = socket.create_server(('127.0.0.1', 0))\n"
              "port = server.getsockname()[1]\n"
              f"for _ in range({connections}):\n"
              "    c = socket.create_connection(('127.0.0.1', port))\n"
              "    s, _a = server.accept()\n"
              "    c.sendall(b'x' * 3000)\n"
              "    s.recv(65536)\n"
              "    c.close(); s.close()\n")
    subprocess.run(["ip", "netns", "exec", namespace, "python3", "-c", script], check=True, timeout=30)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces)")
def test_every_captured_packet_is_in_the_file_when_stopped_at_once(tmp_path: Path) -> None:
    name = f"tb-capture-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        capture = start_capture(Namespace(name), "host", tmp_path)
        deadline = time.monotonic() + 10
        while "listening" not in (tmp_path / CAPTURE_LOG).read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        _connect_many(name, 40)
        counts = stop_capture(capture, tmp_path)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
    assert capture.returncode is not None
    assert counts is not None, (tmp_path / CAPTURE_LOG).read_text()
    # each connection: handshake, data, ACK, FIN exchange (libpcap's "any" skips loopback's
    # outgoing copies)
    assert counts.captured >= 40 * 7
    assert len(read_pcap(tmp_path / CAPTURE_PCAP)) == counts.captured
    assert counts.dropped_by_kernel == 0
