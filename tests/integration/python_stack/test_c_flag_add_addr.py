"""The python stack's MP_CAPABLE C flag and ADD_ADDR retransmission against Linux on two_path
(issue 16 point 3), the server owning a second address 10.0.100.3 as in test_interop.

C flag (RFC 8684 3.1; Linux `net.mptcp.allow_join_initial_addr_port=0`): the server's
SYN/ACK carries C, the client sends no MP_JOIN SYN to the server's initial address/port, joins
the address the server announces and moves data there. Both pairings, the capture read by
tshark.

ADD_ADDR retransmission: a rule on the core router rs drops the first ADD_ADDR towards the
client; the announcer (add_addr_timeout 1 s) sends it again, the client echoes and joins it.
"""

from __future__ import annotations

import csv
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed.wire.tshark import dissect_fields
from tests.integration.python_stack.harness import (
    CLIENT_A,
    CLIENT_B,
    PORT,
    PYTHON,
    REPO,
    SERVER,
    SERVER_2,
    Bed,
    Endpoint,
    Run,
    describe,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]

KERNEL = Endpoint("kernel")
SUBTYPE_MP_CAPABLE, SUBTYPE_MP_JOIN, SUBTYPE_ADD_ADDR = 0, 1, 3
PACKET_FIELDS = ["frame.time_relative", "ip.src", "ip.dst", "tcp.srcport", "tcp.dstport",
                 "tcp.flags.syn", "tcp.flags.ack", "tcp.options.mptcp.subtype",
                 "tcp.options.mptcp.nomoresubflows.flag", "tcp.options.mptcp.echo",
                 "tcp.options.mptcp.ipv4"]
QUEUE = 7


@dataclass(frozen=True)
class Seen:
    """One captured packet, as tshark read it."""

    time_s: float
    src: str
    dst: str
    dport: int
    syn: bool
    ack: bool
    subtypes: tuple[int, ...]
    c_flag: bool
    echo: bool
    advertised: tuple[str, ...]


def _flag(values: list[str]) -> bool:
    return any(value in ("1", "True") for value in values)


def read_capture(pcap: Path) -> list[Seen]:
    seen = []
    for packet in dissect_fields(pcap, PACKET_FIELDS):
        subtypes = tuple(int(v, 0) for v in packet.get("tcp.options.mptcp.subtype", []))
        seen.append(Seen(float(packet["frame.time_relative"][0]), packet["ip.src"][0],
                         packet["ip.dst"][0], int(packet["tcp.dstport"][0]),
                         _flag(packet["tcp.flags.syn"]), _flag(packet["tcp.flags.ack"]), subtypes,
                         _flag(packet.get("tcp.options.mptcp.nomoresubflows.flag", [])),
                         _flag(packet.get("tcp.options.mptcp.echo", [])),
                         tuple(packet.get("tcp.options.mptcp.ipv4", []))))
    return seen


def last_capture(bed: Bed) -> list[Seen]:
    return read_capture(bed.workdir / f"run{bed.runs}.pcap")


def join_syns(seen: list[Seen]) -> list[tuple[str, str, int]]:
    return [(p.src, p.dst, p.dport) for p in seen
            if p.syn and not p.ack and SUBTYPE_MP_JOIN in p.subtypes]


def capable_synack(seen: list[Seen]) -> Seen:
    synacks = [p for p in seen if p.syn and p.ack and SUBTYPE_MP_CAPABLE in p.subtypes]
    assert len(synacks) == 1, synacks
    return synacks[0]


def add_addrs(seen: list[Seen], *, echo: bool) -> list[Seen]:
    return [p for p in seen if SUBTYPE_ADD_ADDR in p.subtypes and p.echo == echo]


def sysctl(bed: Bed, node: str, name: str, value: int) -> None:
    subprocess.run(["ip", "netns", "exec", bed.netns(node), "sysctl", "-q", "-w", f"{name}={value}"],
                   check=True, capture_output=True)


@contextmanager
def second_server_address(bed: Bed) -> Iterator[None]:
    subprocess.run(["ip", "-n", bed.netns("server"), "addr", "add", f"{SERVER_2}/24", "dev", "server-eth0"],
                   check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["ip", "-n", bed.netns("server"), "addr", "del", f"{SERVER_2}/24", "dev",
                        "server-eth0"], capture_output=True)


@contextmanager
def kernel_sysctl(bed: Bed, node: str, name: str, value: int, default: int) -> Iterator[None]:
    sysctl(bed, node, name, value)
    try:
        yield
    finally:
        sysctl(bed, node, name, default)


@contextmanager
def drop_first_add_addr_to_client(bed: Bed, what: str = "add_addr") -> Iterator[list[str]]:
    """The core router rs queues the server->client packets (`what`="add_addr") or the
    client->server ones ("add_addr_echo") to drop_once, which drops the first that carries
    it; yields the list of dropped packets, filled after the block. iptables NFQUEUE: the
    kernel here has no nft queue expression."""
    # server->client packets all leave port 5201, client->server ones all go to it
    rule = ["FORWARD", "-p", "tcp", "--sport" if what == "add_addr" else "--dport", str(PORT),
            "-j", "NFQUEUE", "--queue-num", str(QUEUE)]
    ready, log = bed.workdir / f"drop-{bed.runs}.ready", bed.workdir / f"drop-{bed.runs}.log"
    box = bed.net.popen("rs", [PYTHON, "-m", "tests.integration.python_stack.drop_once", "--queue",
                               str(QUEUE), "--what", what, "--ready", str(ready), "--log", str(log)],
                        cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dropped: list[str] = []
    inserted = False
    try:
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert box.poll() is None and time.monotonic() < deadline, box.stderr.read() if box.stderr else ""
            time.sleep(0.02)
        iptables(bed, "-I", *rule)
        inserted = True
        yield dropped
    finally:
        if inserted:
            iptables(bed, "-D", *rule)
        box.kill()
        box.wait()
        if log.exists():
            dropped += log.read_text().splitlines()


def iptables(bed: Bed, *args: str) -> None:
    subprocess.run(["ip", "netns", "exec", bed.netns("rs"), "iptables-legacy", *args], check=True,
                   capture_output=True)


def bytes_to(report_subflows: tuple, address: str, *, local: bool) -> int:
    chosen = [s for s in report_subflows if (s.local if local else s.remote).startswith(address)]
    return max((max(s.bytes_acked, s.bytes_received) for s in chosen), default=0)


def check_intact(run: Run) -> None:
    assert run.client.error is None and run.server.error is None, describe(run)
    assert run.client.bytes == run.server.bytes > 0 and run.client.sha256 == run.server.sha256, describe(run)


# ---------------------------------------------------------------------------------- C flag
def test_c_flag_from_linux_server_python_client_joins_only_announced(fresh: Bed) -> None:
    with second_server_address(fresh), \
            kernel_sysctl(fresh, "server", "net.mptcp.allow_join_initial_addr_port", 0, 1):
        fresh.kernel_mptcp("server", signal_=((SERVER_2, "server-eth0"),))
        run = fresh.run(Endpoint("python"), KERNEL, transfer=("--bytes", "4000000"))
    check_intact(run)
    seen = last_capture(fresh)
    assert capable_synack(seen).c_flag, describe(run)
    joins = join_syns(seen)
    assert joins and all(dst == SERVER_2 for _, dst, _ in joins), joins
    assert {src for src, _, _ in joins} == {CLIENT_A, CLIENT_B}, joins
    assert bytes_to(run.client.subflows, SERVER_2, local=False) > 100_000, describe(run)
    assert run.kernel("server", "MPJoinSynRx") == len(joins) and run.kernel("server", "MPJoinAckRx") >= 1
    ours = run.client.stack_counters
    assert ours is not None and ours["AddAddr"] >= 1 and ours["MPJoinSynAckRx"] == len(joins), describe(run)


def test_c_flag_from_python_server_linux_joins_only_announced(fresh: Bed) -> None:
    # Linux's client would open CLIENT_B -> SERVER (its subflow endpoint) without the C flag
    fresh.kernel_mptcp("client", subflow=((CLIENT_B, "client-eth1"),))
    server = Endpoint("python", ("--local", SERVER, "--local", SERVER_2, "--stack-config",
                                 '{"allow_join_initial_addr_port": false}'))
    with second_server_address(fresh):
        run = fresh.run(KERNEL, server, transfer=("--bytes", "4000000"))
    check_intact(run)
    seen = last_capture(fresh)
    assert capable_synack(seen).c_flag, describe(run)
    joins = join_syns(seen)
    assert joins and all(dst == SERVER_2 for _, dst, _ in joins), joins
    assert bytes_to(run.server.subflows, SERVER_2, local=True) > 100_000, describe(run)
    assert run.kernel("client", "AddAddr") >= 1 and run.kernel("client", "MPJoinSynAckRx") == len(joins)
    ours = run.server.stack_counters
    assert ours is not None and ours["MPJoinAckRx"] == len(joins), describe(run)


def test_without_c_flag_linux_also_joins_the_initial_address(fresh: Bed) -> None:
    """The reference for the test above: same set-up, C not set."""
    fresh.kernel_mptcp("client", subflow=((CLIENT_B, "client-eth1"),))
    server = Endpoint("python", ("--local", SERVER, "--local", SERVER_2))
    with second_server_address(fresh):
        run = fresh.run(KERNEL, server, transfer=("--bytes", "1000000"))
    check_intact(run)
    seen = last_capture(fresh)
    assert not capable_synack(seen).c_flag
    assert (CLIENT_B, SERVER, PORT) in join_syns(seen), join_syns(seen)


# ------------------------------------------------------------------ ADD_ADDR retransmission
def test_python_retransmits_dropped_add_addr_and_linux_joins(fresh: Bed) -> None:
    server = Endpoint("python", ("--local", SERVER, "--local", SERVER_2, "--stack-config",
                                 '{"add_addr_timeout_s": 1.0}'))
    with second_server_address(fresh), drop_first_add_addr_to_client(fresh) as dropped:
        run = fresh.run(KERNEL, server, transfer=("--seconds", "3"))
    check_intact(run)
    assert len(dropped) == 1, dropped
    ours = run.server.stack_counters
    assert ours is not None and ours["AddAddrTx"] == 2 and ours["EchoAdd"] == 1, describe(run)
    assert run.kernel("client", "AddAddr") == 1 and run.kernel("client", "EchoAddTx") == 1
    seen = last_capture(fresh)
    arrived = add_addrs(seen, echo=False)
    syn = next(p for p in seen if p.syn and not p.ack)
    assert len(arrived) == 1 and arrived[0].advertised == (SERVER_2,), arrived
    assert arrived[0].time_s - syn.time_s >= 1.0  # only the retransmission got through
    assert len(add_addrs(seen, echo=True)) == 1
    assert any(dst == SERVER_2 for _, dst, _ in join_syns(seen))
    assert bytes_to(run.server.subflows, SERVER_2, local=True) > 100_000, describe(run)


def test_linux_retransmits_dropped_add_addr_and_python_joins(fresh: Bed) -> None:
    """Linux 6.18 re-sends after its largest subflow RTO (about 0.2 s here), add_addr_timeout
    being only the cap (mptcp_adjust_add_addr_timeout); 2 s keeps the test short on a
    kernel that still waits the whole timeout."""
    with second_server_address(fresh), \
            kernel_sysctl(fresh, "server", "net.mptcp.add_addr_timeout", 2, 120), \
            drop_first_add_addr_to_client(fresh) as dropped:
        fresh.kernel_mptcp("server", signal_=((SERVER_2, "server-eth0"),))
        run = fresh.run(Endpoint("python"), KERNEL, transfer=("--seconds", "3"))
    check_intact(run)
    assert len(dropped) == 1, dropped
    assert run.kernel("server", "AddAddrTx") >= 2 and run.kernel("server", "EchoAdd") == 1, describe(run)
    ours = run.client.stack_counters
    assert ours is not None and ours["AddAddr"] == 1 and ours["EchoAddTx"] == 1, describe(run)
    seen = last_capture(fresh)
    arrived = add_addrs(seen, echo=False)
    syn = next(p for p in seen if p.syn and not p.ack)
    assert len(arrived) == 1 and arrived[0].advertised == (SERVER_2,), arrived
    assert 0.1 <= arrived[0].time_s - syn.time_s <= 2.5
    assert len(add_addrs(seen, echo=True)) == 1
    assert any(dst == SERVER_2 for _, dst, _ in join_syns(seen))
    assert bytes_to(run.client.subflows, SERVER_2, local=False) > 100_000, describe(run)


def test_python_retransmits_when_the_echo_is_dropped(fresh: Bed) -> None:
    """The echo lost instead: Linux already knows the address (and joins it); the python
    announcer, with no echo, sends the ADD_ADDR again after its timeout and Linux echoes
    that one."""
    server = Endpoint("python", ("--local", SERVER, "--local", SERVER_2, "--stack-config",
                                 '{"add_addr_timeout_s": 1.0}'))
    with second_server_address(fresh), drop_first_add_addr_to_client(fresh, "add_addr_echo") as dropped:
        run = fresh.run(KERNEL, server, transfer=("--seconds", "3"))
    check_intact(run)
    assert len(dropped) == 1, dropped
    ours = run.server.stack_counters
    assert ours is not None and ours["AddAddrTx"] == 2 and ours["EchoAdd"] == 1, describe(run)
    assert run.kernel("client", "AddAddr") == 2 and run.kernel("client", "EchoAddTx") == 2, describe(run)
    seen = last_capture(fresh)
    arrived = add_addrs(seen, echo=False)
    assert len(arrived) == 2 and 0.9 <= arrived[1].time_s - arrived[0].time_s <= 1.5, arrived
    assert len(add_addrs(seen, echo=True)) == 2  # captured on the client: the lost one left it
    assert bytes_to(run.server.subflows, SERVER_2, local=True) > 100_000, describe(run)


# --------------------------------------------------------- ADD_ADDR with a port, MP_PRIO
ANNOUNCED_PORT = 5202


def test_python_client_joins_an_address_linux_announces_with_a_port(fresh: Bed) -> None:
    """Linux announces 10.0.100.3 port 5202 (it listens there for joins only): the python
    client echoes the ADD_ADDR with its port and joins 10.0.100.3:5202."""
    with second_server_address(fresh):
        fresh.sh("server", "ip", "mptcp", "endpoint", "add", SERVER_2, "dev", "server-eth0", "port",
                 str(ANNOUNCED_PORT), "signal")
        run = fresh.run(Endpoint("python"), KERNEL, transfer=("--seconds", "2"))
    check_intact(run)
    ours = run.client.stack_counters
    # Linux 6.18 sent this ADD_ADDR twice, each echoed (AddAddrTx = EchoAdd = 2 on the run seen)
    sent = run.kernel("server", "AddAddrTx")
    assert sent >= 1 and run.kernel("server", "EchoAdd") == sent, describe(run)
    assert ours is not None and ours["AddAddr"] == ours["EchoAddTx"] == sent, describe(run)
    assert run.kernel("server", "MPJoinPortSynRx") >= 1, describe(run)
    seen = last_capture(fresh)
    assert {p.advertised for p in add_addrs(seen, echo=False)} == {(SERVER_2,)}
    port_joins = [j for j in join_syns(seen) if j[1:] == (SERVER_2, ANNOUNCED_PORT)]
    assert port_joins and all(j[1:] == (SERVER_2, ANNOUNCED_PORT) for j in join_syns(seen)
                              if j[1] == SERVER_2), join_syns(seen)
    to_port = [s for s in run.client.subflows if s.remote == f"{SERVER_2}:{ANNOUNCED_PORT}"]
    assert to_port and max(s.bytes_acked for s in to_port) > 100_000, describe(run)


def test_linux_mp_prio_on_its_announced_address_makes_python_stop_using_it(fresh: Bed) -> None:
    """Linux marks its announced endpoint backup mid-transfer: MP_PRIO on the subflow to
    10.0.100.3; the python client (one address, so one subflow there) counts it and sends
    nothing more there while the initial subflow works. With two subflows to 10.0.100.3,
    Linux 6.18 sent MP_PRIO on one of them only (MPPrioTx 1), and only that one stopped."""
    changed_at: list[float] = []

    def to_backup(bed: Bed, _client: subprocess.Popen, _server: subprocess.Popen) -> None:
        bed.sh("server", "ip", "mptcp", "endpoint", "change", SERVER_2, "backup")
        changed_at.append(time.time())

    with second_server_address(fresh):
        fresh.kernel_mptcp("server", signal_=((SERVER_2, "server-eth0"),))
        run = fresh.run(Endpoint("python", ("--local", CLIENT_A)), KERNEL, transfer=("--seconds", "3"),
                        during=[(1.2, to_backup)])
    check_intact(run)
    assert changed_at and run.kernel("server", "MPPrioTx") >= 1, describe(run)
    ours = run.client.stack_counters
    assert ours is not None and ours["MPPrioRx"] >= 1, describe(run)
    started = run.client.started_at_unix
    assert started is not None
    change_t = changed_at[0] - started
    acked = _timeline(run.timeseries["client"], "", SERVER_2)
    before = [a for t, a in acked if t < change_t]
    settled = [a for t, a in acked if t > change_t + 0.3]
    assert before and max(before) > 100_000, acked[:5]
    assert settled and max(settled) - min(settled) < 50_000, (settled[0], settled[-1])


def _timeline(path: Path, local_prefix: str, remote_prefix: str,
              column: str = "bytes_acked") -> list[tuple[float, int]]:
    """`column` over time of the subflows from local_prefix to remote_prefix, summed over
    subflows. A subflow sampled twice at one time stamp counts once (its later row): the suite
    once saw a settled subflow's bytes "double" at the end that way."""
    latest: dict[tuple[float, str, str], int] = {}
    with path.open() as stream:
        for row in csv.DictReader(stream):
            if row["local"].startswith(local_prefix) and row["remote"].startswith(remote_prefix):
                latest[(float(row["t_s"]), row["local"], row["remote"])] = int(row[column])
    totals: dict[float, int] = {}
    for (t, _local, _remote), value in latest.items():
        totals[t] = totals.get(t, 0) + value
    return sorted(totals.items())


def test_python_mp_prio_on_its_announced_address_makes_linux_stop_using_it(fresh: Bed) -> None:
    """The python server announces 10.0.100.3, Linux joins it, then the server marks its
    subflows from 10.0.100.3 backup (MP_PRIO on each): Linux counts MPPrioRx and sends
    nothing more there while the initial subflow works."""
    server = Endpoint("python", ("--local", SERVER, "--local", SERVER_2, "--at", "1.2s:backup:" + SERVER_2))
    with second_server_address(fresh):
        run = fresh.run(KERNEL, server, transfer=("--seconds", "3"))
    check_intact(run)
    ours = run.server.stack_counters
    assert ours is not None and ours["MPPrioTx"] >= 1, describe(run)
    assert run.kernel("client", "MPPrioRx") == ours["MPPrioTx"], describe(run)
    received = _timeline(run.timeseries["server"], SERVER_2, "", "bytes_received")
    before = [b for t, b in received if t < 1.1]
    settled = [b for t, b in received if t > 1.7]
    assert before and max(before) > 100_000, received[:5]
    assert settled and max(settled) - min(settled) < 50_000, (settled[0], settled[-1])


def test_linux_joins_an_address_python_announces_with_a_port(fresh: Bed) -> None:
    """The python server (no path manager of its own) announces 10.0.100.3 port 5202 and
    takes the join there: Linux echoes the ADD_ADDR with its port and joins 10.0.100.3:5202."""
    server = Endpoint("python", ("--local", SERVER, "--local", SERVER_2, "--path-manager", "none",
                                 "--announce", f"{SERVER_2}:{ANNOUNCED_PORT}"))
    with second_server_address(fresh):
        run = fresh.run(KERNEL, server, transfer=("--seconds", "2"))
    check_intact(run)
    ours = run.server.stack_counters
    assert ours is not None and ours["AddAddrTx"] == 1 and ours["EchoAdd"] == 1, describe(run)
    assert run.kernel("client", "AddAddr") == 1 and run.kernel("client", "EchoAddTx") == 1, describe(run)
    assert run.kernel("client", "MPJoinSynAckRx") >= 1, describe(run)
    seen = last_capture(fresh)
    joins = join_syns(seen)
    assert joins and all(j[1:] == (SERVER_2, ANNOUNCED_PORT) for j in joins), joins
    at_port = [s for s in run.server.subflows if s.local == f"{SERVER_2}:{ANNOUNCED_PORT}"]
    assert at_port and max(s.bytes_received for s in at_port) > 100_000, describe(run)
