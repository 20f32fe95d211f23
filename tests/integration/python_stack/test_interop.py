"""The bundled Python stack against the Linux kernel MPTCP over two_path, for real.

Every test moves a seeded payload, checks both ends' SHA-256, reads the kernel's MPTcpExt
counters around the run, and has tshark judge the client host's capture: no malformed packet,
no expert error, and no more MPTCP mapping warnings (per packet) than kernel <-> kernel
traffic of the same transfer shows.
"""

from __future__ import annotations

import csv
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.python_stack.harness import (
    CLIENT_B,
    SERVER,
    SERVER_2,
    Bed,
    Endpoint,
    Run,
    WireVerdict,
    data_subflows,
    describe,
    sigterm,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]

Baselines = dict[str, WireVerdict]
PY = Endpoint("python")
KERNEL = Endpoint("kernel")
CLIENT_B_ENDPOINT = ((CLIENT_B, "client-eth1"),)


def check_intact(run: Run) -> None:
    upload = run.client.direction == "upload"
    sender, receiver = (run.client, run.server) if upload else (run.server, run.client)
    assert run.client.error is None and run.server.error is None, describe(run)
    assert sender.bytes == receiver.bytes > 0, describe(run)
    assert sender.sha256 == receiver.sha256, describe(run)


def check_wire(run: Run, baselines: Baselines, mptcp: bool = True) -> None:
    """No malformed packet, no expert error; tshark's mapping analysis warns no more than on
    kernel <-> kernel traffic of the same direction.

    Warnings on loss-recovery segments (retransmissions, segments after a gap) are left out
    of the comparison: tshark cannot place a re-sent range in its mapping tree, so they
    count losses, and the kernel's capture had none. Payload segments are compared exactly
    (the kernel's capture has one: the MP_CAPABLE data packet, which carries no DSS).
    Zero-length ACK/FIN segments sent after a subflow's last mapping get the warning from
    either stack (every ACK of a client that only receives, ACKs after a subflow FIN); their
    number follows timing, so they are compared per packet with the same direction's kernel
    capture, with 2% of the packets as slack.
    """
    wire = run.wire
    assert wire is not None and wire.packets > 0
    assert wire.errors == [], wire.errors[:10]
    assert (wire.mptcp_packets > 0) == mptcp
    baseline = baselines[run.client.direction or "upload"]
    assert wire.data_mapping_warnings <= baseline.data_mapping_warnings, (wire, baseline)
    ours = wire.clean_mapping_warnings - wire.data_mapping_warnings
    theirs = baseline.clean_mapping_warnings - baseline.data_mapping_warnings
    assert ours <= (theirs / baseline.packets + 0.02) * wire.packets, (wire, baseline)


def check_two_subflows(run: Run) -> None:
    for report in (run.client, run.server):
        assert report.mptcp_used, describe(run)
        assert len(data_subflows(report)) >= 2, describe(run)


def test_python_client_kernel_server(fresh: Bed, kernel_baseline: Baselines) -> None:
    run = fresh.run(PY, KERNEL)
    check_intact(run)
    check_two_subflows(run)
    assert run.kernel("server", "MPCapableSYNRX") == 1 and run.kernel("server", "MPCapableACKRX") == 1
    assert run.kernel("server", "MPJoinSynRx") >= 1 and run.kernel("server", "MPJoinAckRx") >= 1
    assert run.client.stack_counters is not None and run.client.stack_counters["MPJoinSynAckRx"] >= 1
    check_wire(run, kernel_baseline)


def test_python_client_downloads_from_kernel_server(fresh: Bed, kernel_baseline: Baselines) -> None:
    run = fresh.run(PY, KERNEL, transfer=("--bytes", "4000000", "--direction", "download"))
    check_intact(run)
    check_two_subflows(run)
    assert run.kernel("server", "MPJoinAckRx") >= 1
    check_wire(run, kernel_baseline)


def test_kernel_client_python_server(fresh: Bed, kernel_baseline: Baselines) -> None:
    fresh.kernel_mptcp("client", subflow=CLIENT_B_ENDPOINT)
    run = fresh.run(KERNEL, PY)
    check_intact(run)
    check_two_subflows(run)
    assert run.kernel("client", "MPCapableSYNACKRX") == 1
    assert run.kernel("client", "MPJoinSynAckRx") >= 1
    assert run.server.stack_counters is not None and run.server.stack_counters["MPJoinAckRx"] >= 1
    check_wire(run, kernel_baseline)


def test_python_to_python(fresh: Bed, kernel_baseline: Baselines) -> None:
    run = fresh.run(PY, PY)
    check_intact(run)
    check_two_subflows(run)
    assert run.server.stack_counters is not None and run.server.stack_counters["MPJoinAckRx"] >= 1
    check_wire(run, kernel_baseline)


@pytest.mark.parametrize("kernel_role", ["server", "client"])
def test_checksum_required_by_the_kernel(fresh: Bed, kernel_baseline: Baselines, kernel_role: str) -> None:
    if kernel_role == "server":
        fresh.kernel_mptcp("server", checksum=True)
        run = fresh.run(PY, KERNEL)
        ours = run.client
    else:
        fresh.kernel_mptcp("client", checksum=True, subflow=CLIENT_B_ENDPOINT)
        run = fresh.run(KERNEL, PY)
        ours = run.server
    check_intact(run)
    check_two_subflows(run)
    assert ours.mptcp_info is not None and ours.mptcp_info.csum_enabled, describe(run)
    theirs = run.server if kernel_role == "server" else run.client
    assert theirs.mptcp_info is not None and theirs.mptcp_info.csum_enabled
    assert run.kernel(kernel_role, "DataCsumErr") == 0
    assert ours.stack_counters is not None and ours.stack_counters["DataCsumErr"] == 0
    check_wire(run, kernel_baseline)


def _server_second_address(bed: Bed, present: bool) -> None:
    verb = "add" if present else "del"
    subprocess.run(["ip", "-n", bed.netns("server"), "addr", verb, f"{SERVER_2}/24", "dev", "server-eth0"],
                   check=present, capture_output=True)


def test_add_addr_from_kernel_then_remove_addr(fresh: Bed, kernel_baseline: Baselines) -> None:
    """Kernel server signals 10.0.100.3; the python client joins it; the kernel then
    removes it (REMOVE_ADDR kernel -> python) and the transfer finishes on the rest."""
    _server_second_address(fresh, True)
    try:
        fresh.kernel_mptcp("server", signal_=((SERVER_2, "server-eth0"),))

        def withdraw(bed: Bed, _client: subprocess.Popen, _server: subprocess.Popen) -> None:
            subprocess.run(["ip", "-n", bed.netns("server"), "mptcp", "endpoint", "flush"], check=True)

        run = fresh.run(PY, KERNEL, transfer=("--seconds", "2"), during=[(1.0, withdraw)])
    finally:
        _server_second_address(fresh, False)
    check_intact(run)
    ours = run.client.stack_counters
    assert ours is not None and ours["AddAddr"] >= 1 and ours["EchoAddTx"] >= 1, describe(run)
    assert run.kernel("server", "EchoAdd") >= 1
    to_second = [s for s in run.client.subflows if s.remote.startswith(SERVER_2)]
    assert to_second and max(s.bytes_acked for s in to_second) > 100_000, describe(run)
    assert ours["RmAddr"] >= 1 and run.kernel("server", "RmAddrTx") >= 1, describe(run)
    assert not any(s.open_at_end for s in to_second), describe(run)
    check_wire(run, kernel_baseline)


def test_add_addr_from_python_echoed_and_joined(fresh: Bed, kernel_baseline: Baselines) -> None:
    """The python server owns two addresses and announces the second; the kernel client
    echoes it and joins it."""
    _server_second_address(fresh, True)
    try:
        server = Endpoint("python", ("--local", SERVER, "--local", SERVER_2))
        run = fresh.run(KERNEL, server)
    finally:
        _server_second_address(fresh, False)
    check_intact(run)
    ours = run.server.stack_counters
    assert ours is not None and ours["AddAddrTx"] >= 1 and ours["EchoAdd"] >= 1, describe(run)
    assert run.kernel("client", "AddAddr") >= 1 and run.kernel("client", "EchoAddTx") >= 1
    assert run.kernel("client", "MPJoinSynAckRx") >= 1
    joined = [s for s in run.server.subflows if s.local.startswith(SERVER_2)]
    assert joined and joined[0].bytes_received > 100_000, describe(run)
    check_wire(run, kernel_baseline)


def test_remove_addr_from_python(fresh: Bed, kernel_baseline: Baselines) -> None:
    client = Endpoint("python", ("--at", "0.6s:remove-addr:" + CLIENT_B))
    run = fresh.run(client, KERNEL, transfer=("--seconds", "1.5"))
    check_intact(run)
    assert run.client.stack_counters is not None and run.client.stack_counters["RmAddrTx"] >= 1
    assert run.kernel("server", "RmAddr") >= 1, describe(run)
    second = [s for s in run.client.subflows if s.local.startswith(CLIENT_B)]
    assert second and not second[0].open_at_end and second[0].bytes_acked > 100_000, describe(run)
    check_wire(run, kernel_baseline)


def _backup_bytes_timeline(path: Path, local_prefix: str) -> list[tuple[float, int]]:
    with path.open() as stream:
        return [(float(row["t_s"]), int(row["bytes_acked"])) for row in csv.DictReader(stream)
                if row["local"].startswith(local_prefix)]


def test_backup_subflow_carries_data_only_after_primary_dies(fresh: Bed, kernel_baseline: Baselines) -> None:
    # stale after two RTOs without progress (Linux: stale_loss_cnt), not after a queue drop
    client = Endpoint("python", ("--backup", CLIENT_B, "--stack-config", '{"stale_loss_count": 2}'))
    cut_at: list[float] = []

    def cut_primary(bed: Bed, _client: subprocess.Popen, _server: subprocess.Popen) -> None:
        cut_at.append(time.time())
        bed.net.set_link_up("a", False)

    run = fresh.run(client, KERNEL, transfer=("--seconds", "2.5"), during=[(1.0, cut_primary)])
    check_intact(run)
    assert run.kernel("server", "MPJoinSynBackupRx") >= 1, describe(run)
    started = run.client.started_at_unix
    assert started is not None and cut_at
    cut_t = cut_at[0] - started
    backup = _backup_bytes_timeline(run.timeseries["client"], CLIENT_B)
    before = [acked for t, acked in backup if t < cut_t - 0.05]
    after = [acked for t, acked in backup if t > cut_t]
    assert before and max(before) == 0, describe(run)
    assert after and max(after) > 500_000, describe(run)


def test_fastclose_from_python(fresh: Bed, kernel_baseline: Baselines) -> None:
    client = Endpoint("python", ("--at", "1M:fastclose"))
    run = fresh.run(client, KERNEL, transfer=("--seconds", "2"))
    assert run.client.stack_counters is not None and run.client.stack_counters["MPFastcloseTx"] >= 1
    assert run.kernel("server", "MPFastcloseRx") >= 1, describe(run)
    assert run.server.error_kind == "reset", describe(run)
    check_wire(run, kernel_baseline)


def test_fastclose_from_kernel(fresh: Bed, kernel_baseline: Baselines) -> None:
    """The kernel client is interrupted mid-transfer: it closes with SO_LINGER 0, which Linux
    turns into MP_FASTCLOSE; the python server honours it (the key is its own)."""
    fresh.kernel_mptcp("client", subflow=CLIENT_B_ENDPOINT)

    def interrupt(_bed: Bed, client: subprocess.Popen, _server: subprocess.Popen) -> None:
        sigterm(client)

    run = fresh.run(KERNEL, PY, transfer=("--seconds", "3"), during=[(0.8, interrupt)])
    assert run.kernel("client", "MPFastcloseTx") >= 1, describe(run)
    ours = run.server.stack_counters
    assert ours is not None and ours["MPFastcloseRx"] >= 1, describe(run)
    assert run.server.error_kind == "reset", describe(run)
    check_wire(run, kernel_baseline)


@pytest.mark.parametrize("python_role", ["client", "server"])
def test_plain_tcp_peer_falls_back(fresh: Bed, kernel_baseline: Baselines, python_role: str) -> None:
    kernel_node = "server" if python_role == "client" else "client"
    fresh.kernel_mptcp(kernel_node, enabled=False)
    tcp_kernel = Endpoint("kernel", ("--tcp",))
    run = fresh.run(PY, tcp_kernel) if python_role == "client" else fresh.run(tcp_kernel, PY)
    check_intact(run)
    ours = run.client if python_role == "client" else run.server
    assert not ours.mptcp_used and not ours.mptcp_seen, describe(run)
    assert len(ours.subflows) == 1
    if python_role == "client":
        assert ours.stack_counters is not None and ours.stack_counters["MPCapableFallbackSYNACK"] == 1
    check_wire(run, kernel_baseline, mptcp=python_role == "client")  # only our SYN offers MPTCP
