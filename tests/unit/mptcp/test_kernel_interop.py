"""Interoperability with the Linux kernel MPTCP (the arbiter), in two network namespaces.

Namespace K runs kernel MPTCP sockets (IPPROTO_MPTCP) on 10.99.x.1; namespace S runs our
stack (`stack_peer.py`) on AF_PACKET with addresses the kernel of S does not own, reached
through static neighbour entries in K. Each test moves a known byte pattern both ways and
checks the hashes, our outcome, and the kernel's MPTcpExt counters (nstat) in K.
Exactly the namespaces created here are deleted afterwards. They are made as a testbed run's
(testbed.net.state.RunState: `tb-<run>-mpk`, `tb-<run>-mps`, recorded before they exist), so a
test killed half-way leaves nothing `testbed clean` does not know, and the suite's leak check
counts them as the session's own.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.net.state import NETNS_PATTERN, RUNS_DIR, RunState, delete_netns

pytestmark = [pytest.mark.root, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
KERNEL_PEER = r"""
import hashlib, json, socket, subprocess, sys, time
role, addr = sys.argv[1], sys.argv[2]
port, send, expect = (int(value) for value in sys.argv[3:6])
proto = 0 if "tcp" in sys.argv[6:] else 262  # plain TCP when MPTCP is disabled
joins = [a.split("=")[1:] for a in sys.argv[6:] if a.startswith("join=")]  # [["src", ip]]
def wait_for_join(end, address):
    # Linux refuses a join whose SYN/ACK arrives after its own DATA_FIN (mptcp_finish_join:
    # the connection is no longer fully established), so a client that sent everything waits
    # for its join subflow before it shuts down
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not subprocess.run(
            ["ss", "-Htn", "state", "established", end, address],
            capture_output=True, text=True).stdout.strip():
        time.sleep(0.01)
payload = bytes((i * 7) & 0xFF for i in range(send))
def drain(conn, until):
    got = bytearray()
    while until is None or len(got) < until:
        chunk = conn.recv(65536)
        if not chunk:
            break
        got += chunk
    return got
if role == "server":
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(1); s.settimeout(30)
    conn, _ = s.accept(); conn.settimeout(30)
    got = drain(conn, expect); conn.sendall(payload); conn.shutdown(socket.SHUT_WR); drain(conn, None)
else:
    conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto); conn.settimeout(30)
    conn.connect((addr, port)); conn.sendall(payload)
    for end, address in joins:
        wait_for_join(end, address)
    conn.shutdown(socket.SHUT_WR)
    got = drain(conn, None)
conn.close()
print(json.dumps({"received": len(got), "sha256": hashlib.sha256(bytes(got)).hexdigest()}))
"""


def _pattern_hash(size: int, factor: int) -> str:
    return hashlib.sha256(bytes((i * factor) & 0xFF for i in range(size))).hexdigest()


def _run(*command: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr}")
    return result.stdout


def _available() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("nstat") \
        is not None


class Namespaces:
    """Namespace K (kernel) and S (our stack), recorded as one testbed run before they exist."""

    def __init__(self) -> None:
        self.state: RunState | None = None
        self.kernel = self.stack = ""

    def __enter__(self) -> Namespaces:
        self.state = RunState.create()
        self.kernel, self.stack = self.state.netns_name("mpk"), self.state.netns_name("mps")
        try:
            self._build()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _build(self) -> None:
        assert self.state is not None
        for name in (self.kernel, self.stack):
            self.state.add_netns(name)  # recorded first: `testbed clean` can always find it
            _run("ip", "netns", "add", name)
        _run("ip", "link", "add", "vk", "netns", self.kernel, "type", "veth", "peer", "name",
             "vs", "netns", self.stack)
        _run("ip", "-n", self.kernel, "addr", "add", "10.99.0.1/24", "dev", "vk")
        for name, link in ((self.kernel, "vk"), (self.stack, "vs")):
            _run("ip", "-n", name, "link", "set", link, "up")
            _run("ip", "-n", name, "link", "set", "lo", "up")
            # real MTU-sized segments with real checksums (no offload shortcuts on veth)
            subprocess.run(["ip", "netns", "exec", name, "ethtool", "-K", link, "tso", "off",
                            "gso", "off", "gro", "off", "tx", "off"], capture_output=True,
                           check=False)
        self.stack_mac = json.loads(_run("ip", "-j", "-n", self.stack, "link", "show", "vs"))[0][
            "address"]
        self.kernel_mac = json.loads(_run("ip", "-j", "-n", self.kernel, "link", "show", "vk"))[
            0]["address"]
        for address in ("10.99.0.2", "10.99.0.12", "10.99.0.22"):
            _run("ip", "-n", self.kernel, "neigh", "add", address, "lladdr", self.stack_mac,
                 "dev", "vk")
        _run("ip", "netns", "exec", self.kernel, "sysctl", "-q", "-w", "net.mptcp.enabled=1")
        _run("ip", "netns", "exec", self.kernel, "ip", "mptcp", "limits", "set", "subflows",
             "4", "add_addr_accepted", "4")

    def __exit__(self, *exc: object) -> None:
        if self.state is None:
            return
        problems = delete_netns(list(self.state.netns))  # its processes first, then the names
        self.state.remove()
        self.state = None
        assert not problems, problems

    def in_kernel(self, *command: str) -> None:
        _run("ip", "netns", "exec", self.kernel, *command)

    def counters(self) -> dict[str, int]:
        out = _run("ip", "netns", "exec", self.kernel, "nstat", "-az")
        values = {}
        for line in out.splitlines():
            parts = line.split()
            if parts and parts[0].startswith("MPTcpExt"):
                values[parts[0][len("MPTcpExt"):]] = int(parts[1])
        return values


def _exchange(ns: Namespaces, *, our_role: str, local: str, kernel_checksum: bool = False,
              up: int = 1_500_000, down: int = 700_000,
              kernel_plain_tcp: bool = False, hold_for_joins: int = 0,
              kernel_join: str | None = None) -> tuple[dict, dict]:
    """Our side sends `up` bytes (pattern x3) and receives `down` bytes (pattern x7).

    A kernel client connects before our side listens at times; its SYN retransmission
    covers that, as it would on a real network."""
    kernel_role = "server" if our_role == "client" else "client"
    kernel_address = "10.99.0.1" if kernel_role == "server" else "10.99.0.2"
    if kernel_checksum:
        _run("ip", "netns", "exec", ns.kernel, "sysctl", "-q", "-w",
             "net.mptcp.checksum_enabled=1")
    kernel = subprocess.Popen(
        ["ip", "netns", "exec", ns.kernel, sys.executable, "-c", KERNEL_PEER, kernel_role,
         kernel_address, "5201", str(down), str(up), *(["tcp"] if kernel_plain_tcp else []),
         *([f"join={kernel_join}"] if kernel_join else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    if kernel_role == "server":
        time.sleep(0.3)
    command = ["ip", "netns", "exec", ns.stack, sys.executable, "-m",
               "tests.unit.mptcp.stack_peer", our_role, "--local", local, "--remote",
               "10.99.0.1", "--send", str(up), "--expect", str(down), "--peer-mac",
               ns.kernel_mac, "--iface", "vs", "--hold-for-joins", str(hold_for_joins)]
    ours = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=60,
                          check=False)
    kernel_out, kernel_err = kernel.communicate(timeout=60)
    assert ours.returncode == 0, ours.stderr
    assert kernel.returncode == 0, kernel_err
    return json.loads(ours.stdout), json.loads(kernel_out)


needs_root = pytest.mark.skipif(not _available(), reason="needs root, ip and nstat")


@needs_root
def test_our_client_against_kernel_server() -> None:
    with Namespaces() as ns:
        ours, kernel = _exchange(ns, our_role="client", local="10.99.0.2")
        counters = ns.counters()
    assert kernel["sha256"] == _pattern_hash(1_500_000, 3)
    assert ours["sha256"] == _pattern_hash(700_000, 7)
    assert ours["stats"]["outcome"] == "mptcp"
    assert counters["MPCapableSYNRX"] == 1 and counters["MPCapableACKRX"] == 1
    assert counters.get("DSSNotMatching", 0) == 0 and counters.get("InfiniteMapRx", 0) == 0


@needs_root
def test_our_join_accepted_by_kernel_and_both_subflows_carry_data() -> None:
    with Namespaces() as ns:
        ours, kernel = _exchange(ns, our_role="client", local="10.99.0.2,10.99.0.12")
        counters = ns.counters()
    assert kernel["sha256"] == _pattern_hash(1_500_000, 3)
    assert ours["sha256"] == _pattern_hash(700_000, 7)
    assert counters["MPJoinSynRx"] == 1 and counters["MPJoinAckRx"] == 1
    assert counters.get("MPJoinAckHMacFailure", 0) == 0
    subflows = ours["stats"]["subflows"]
    assert len(subflows) == 2 and all(s["bytes_sent"] > 0 for s in subflows)


@needs_root
def test_kernel_client_against_our_server() -> None:
    with Namespaces() as ns:
        ours, kernel = _exchange(ns, our_role="server", local="10.99.0.2",
                                 up=700_000, down=1_500_000)
        counters = ns.counters()
    assert ours["sha256"] == _pattern_hash(1_500_000, 7)
    assert kernel["sha256"] == _pattern_hash(700_000, 3)
    assert ours["stats"]["outcome"] == "mptcp"
    assert counters["MPCapableSYNACKRX"] == 1


@needs_root
def test_checksums_requested_by_kernel_are_negotiated_and_verified_both_ways() -> None:
    with Namespaces() as ns:
        # our side does not ask for checksums; the kernel's A flag on the SYN/ACK must win
        ours, kernel = _exchange(ns, our_role="client", local="10.99.0.2",
                                 kernel_checksum=True)
        counters = ns.counters()
    assert ours["stats"]["checksum"] is True
    assert kernel["sha256"] == _pattern_hash(1_500_000, 3)
    assert ours["sha256"] == _pattern_hash(700_000, 7)
    assert counters.get("DataCsumErr", 0) == 0
    assert ours["stats"]["counters"]["DataCsumErr"] == 0


@needs_root
def test_kernel_client_joins_our_server_from_a_second_address() -> None:
    with Namespaces() as ns:
        ns.in_kernel("ip", "addr", "add", "10.99.0.11/24", "dev", "vk")
        ns.in_kernel("ip", "mptcp", "endpoint", "add", "10.99.0.11", "dev", "vk", "subflow")
        # the kernel opens its join right after the handshake (its SYN can be in the same burst
        # as the data): our side holds its last byte until the join is up, and the kernel
        # client shuts down only once its join is established (it refuses a join completing
        # after its DATA_FIN: one run in four failed so), so a fast transfer cannot end first
        ours, kernel = _exchange(ns, our_role="server", local="10.99.0.2",
                                 up=700_000, down=1_500_000, hold_for_joins=1,
                                 kernel_join="src=10.99.0.11")
        counters = ns.counters()
    assert ours["sha256"] == _pattern_hash(1_500_000, 7)
    assert kernel["sha256"] == _pattern_hash(700_000, 3)
    assert counters["MPJoinSynAckRx"] == 1
    assert ours["stats"]["counters"]["MPJoinAckRx"] == 1
    remotes = {s["remote"].split(":")[0] for s in ours["stats"]["subflows"]}
    assert remotes == {"10.99.0.1", "10.99.0.11"}


@needs_root
def test_kernel_add_addr_is_verified_echoed_and_joined() -> None:
    with Namespaces() as ns:
        ns.in_kernel("ip", "addr", "add", "10.99.0.21/24", "dev", "vk")
        ns.in_kernel("ip", "mptcp", "endpoint", "add", "10.99.0.21", "dev", "vk", "signal")
        ours, kernel = _exchange(ns, our_role="client", local="10.99.0.2")
        counters = ns.counters()
    assert kernel["sha256"] == _pattern_hash(1_500_000, 3)
    assert ours["sha256"] == _pattern_hash(700_000, 7)
    # the kernel's HMAC verified; on a loaded machine our stack counted the ADD_ADDR twice in some
    # runs (Linux sent it again; why was not established): every copy must verify, none dropped
    assert ours["stats"]["counters"]["AddAddr"] >= 1
    assert ours["stats"]["counters"]["AddAddrDrop"] == 0
    assert counters["EchoAdd"] == 1 and counters["MPJoinSynRx"] == 1
    remotes = {s["remote"].split(":")[0] for s in ours["stats"]["subflows"]}
    assert remotes == {"10.99.0.1", "10.99.0.21"}


@needs_root
def test_plain_tcp_kernel_server_makes_our_client_fall_back() -> None:
    with Namespaces() as ns:
        ns.in_kernel("sysctl", "-q", "-w", "net.mptcp.enabled=0")
        ours, kernel = _exchange(ns, our_role="client", local="10.99.0.2",
                                 kernel_plain_tcp=True)
    assert kernel["sha256"] == _pattern_hash(1_500_000, 3)
    assert ours["sha256"] == _pattern_hash(700_000, 7)
    assert ours["stats"]["outcome"] == "fallback-syn"
    assert ours["stats"]["counters"]["MPCapableFallbackSYNACK"] == 1


@needs_root
def test_our_add_addr_is_accepted_by_kernel_client_which_joins_it() -> None:
    with Namespaces() as ns:
        # our server owns two addresses; its (fullmesh) path manager announces the second, and
        # holds its last byte until the kernel's join to it is up (as in the test above, and
        # the kernel client waits for that join before it shuts down)
        ours, kernel = _exchange(ns, our_role="server", local="10.99.0.2,10.99.0.12",
                                 up=700_000, down=1_500_000, hold_for_joins=1,
                                 kernel_join="dst=10.99.0.12")
        counters = ns.counters()
    assert ours["sha256"] == _pattern_hash(1_500_000, 7)
    assert kernel["sha256"] == _pattern_hash(700_000, 3)
    assert counters["AddAddr"] == 1  # the kernel verified our ADD_ADDR HMAC
    assert ours["stats"]["counters"]["EchoAdd"] == 1
    assert counters["MPJoinSynAckRx"] == 1
    locals_ = {s["local"].split(":")[0] for s in ours["stats"]["subflows"]}
    assert locals_ == {"10.99.0.2", "10.99.0.12"}


@needs_root
def test_loss_recovery_against_kernel_with_three_percent_loss_each_way() -> None:
    if shutil.which("nft") is None:
        pytest.skip("needs nft")
    with Namespaces() as ns:
        ns.in_kernel("nft", "add", "table", "inet", "lossy")
        for chain, hook in (("out", "output"), ("in", "input")):
            ns.in_kernel("nft", "add", "chain", "inet", "lossy", chain,
                         f"{{ type filter hook {hook} priority 0 ; }}")
            ns.in_kernel("nft", "add", "rule", "inet", "lossy", chain, "meta", "l4proto", "tcp",
                         "numgen", "random", "mod", "100", "<", "3", "drop")
        ours, kernel = _exchange(ns, our_role="client", local="10.99.0.2,10.99.0.12",
                                 up=3_000_000, down=2_000_000)
    assert kernel["sha256"] == _pattern_hash(3_000_000, 3)
    assert ours["sha256"] == _pattern_hash(2_000_000, 7)
    assert ours["stats"]["outcome"] == "mptcp"
    sent = sum(s["bytes_sent"] for s in ours["stats"]["subflows"])
    assert sent > 3_000_000  # some bytes went twice: losses really happened and were repaired


@needs_root
def test_its_namespaces_are_known_to_testbed_clean_and_to_the_leak_check() -> None:
    from tests.conftest import MARKER, _foreign

    with Namespaces() as ns:
        assert ns.state is not None
        run_file = RUNS_DIR / f"{ns.state.run_id}.json"
        record = json.loads(run_file.read_text())
        # what `testbed clean` reads: a run whose runner is gone has these namespaces deleted
        assert record["netns"] == [ns.kernel, ns.stack] and record["runner_pid"] == os.getpid()
        assert all(NETNS_PATTERN.match(name) for name in (ns.kernel, ns.stack))
        # the session's leak check counts them as its own, were they left behind
        assert not _foreign(ns.kernel, os.environ.get(MARKER, "no-session"))
    assert not run_file.exists()
    assert not (Path("/run/netns") / record["netns"][0]).exists()
