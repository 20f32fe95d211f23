"""The Linux kernel's MPTCP in a node: `ip mptcp` limits and endpoints, sysctls, counters.

Counters come from /proc/<pid>/net/netstat of a process inside the node (its shell), which is
that namespace's view of the MPTcpExt and TcpExt counters — what `nstat` reads, without a
subprocess and without nstat's history files.
"""

from __future__ import annotations

from pathlib import Path

from testbed.command import run_command
from testbed.errors import EnvironmentProblem

COUNTER_GROUPS = ("MPTcpExt", "TcpExt")
TCP_COUNTERS_KEPT = ("TCPLossProbes", "TCPSackRecovery", "TCPTimeouts", "TCPFastRetrans")


def read_counters(pid: int) -> dict[str, int]:
    """MPTcpExt counters (all) and a few TcpExt ones, as seen by process `pid`'s namespace."""
    try:
        lines = Path(f"/proc/{pid}/net/netstat").read_text().splitlines()
    except OSError as exc:
        raise EnvironmentProblem(f"cannot read counters of pid {pid}: {exc.strerror}") from exc
    counters: dict[str, int] = {}
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        group, _, names = header.partition(":")
        if group not in COUNTER_GROUPS:
            continue
        for name, value in zip(names.split(), values.partition(":")[2].split(), strict=True):
            if group == "MPTcpExt" or name in TCP_COUNTERS_KEPT:
                counters[f"{group}{name}"] = int(value)
    snmp = Path(f"/proc/{pid}/net/snmp").read_text().splitlines()
    for header, values in zip(snmp[::2], snmp[1::2], strict=False):
        if header.startswith("Tcp:"):
            for name, value in zip(header.split()[1:], values.split()[1:], strict=True):
                if name in ("InCsumErrors", "RetransSegs", "OutRsts"):
                    counters[f"Tcp{name}"] = int(value)
    return counters


def counter_deltas(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Counters that moved, as after - before (nonzero only, to keep results readable)."""
    return {k: after[k] - before.get(k, 0) for k in sorted(after) if after[k] != before.get(k, 0)}


def configure(
    netns: str,
    *,
    subflows: int,
    add_addr_accepted: int,
    checksum: bool,
    subflow_endpoints: tuple[tuple[str, str], ...] = (),  # (address, device)
    signal_endpoints: tuple[tuple[str, str], ...] = (),
    stale_loss_cnt: int | None = None,
    c_flag: bool = False,
) -> None:
    """Limits, checksum, C-flag and stale-subflow sysctls and path-manager endpoints of one
    namespace."""
    stale = [f"net.mptcp.stale_loss_cnt={stale_loss_cnt}"] if stale_loss_cnt is not None else []
    # only when asked: a caller may have set the sysctl itself (the C-flag interop tests)
    c_flag_off = ["net.mptcp.allow_join_initial_addr_port=0"] if c_flag else []
    run_command(["sysctl", "-q", "-w", "net.mptcp.enabled=1", f"net.mptcp.checksum_enabled={int(checksum)}",
                 *c_flag_off, *stale], netns=netns, what=f"MPTCP sysctls in {netns}")
    run_command(["ip", "-n", netns, "mptcp", "limits", "set", "subflows", str(subflows),
                 "add_addr_accepted", str(add_addr_accepted)], what=f"ip mptcp limits in {netns}")
    run_command(["ip", "-n", netns, "mptcp", "endpoint", "flush"], what=f"ip mptcp endpoint flush in {netns}")
    for flag, endpoints in (("subflow", subflow_endpoints), ("signal", signal_endpoints)):
        for address, device in endpoints:
            run_command(["ip", "-n", netns, "mptcp", "endpoint", "add", address, "dev", device, flag],
                        what=f"ip mptcp endpoint {address} {flag} in {netns}")


def disable(netns: str) -> None:
    """Plain-TCP host: MPTCP off in the namespace (sockets asking for it are refused)."""
    run_command(["sysctl", "-q", "-w", "net.mptcp.enabled=0"], netns=netns,
                what=f"disabling MPTCP in {netns}")


def congestion_control(netns: str, wanted: str | None) -> str:
    """The TCP congestion control endpoints in the namespace get; set per route when asked.

    A non-init namespace may only change its default to algorithms the host allows, so a
    wanted algorithm goes on every route as the `congctl` metric instead (see
    testbed.net.congestion), which the kernel applies to every subflow it opens or accepts.
    """
    if wanted is not None:
        from testbed.net.congestion import set_route_congestion_control

        set_route_congestion_control(netns, wanted)
        return wanted
    return run_command(["sysctl", "-n", "net.ipv4.tcp_congestion_control"], netns=netns,
                       what=f"reading congestion control in {netns}").stdout.strip()


def set_rto_max(netns: str, rto_max_ms: int) -> None:
    """Cap TCP's retransmission timeout (net.ipv4.tcp_rto_max_ms, per namespace since Linux
    6.15): a subflow whose path was absent for a minute backs off to a minute between probes
    by default, and so stays unused long after the path is back."""
    run_command(["sysctl", "-q", "-w", f"net.ipv4.tcp_rto_max_ms={rto_max_ms}"], netns=netns,
                what=f"TCP maximum RTO in {netns} (needs Linux >= 6.15)")


def set_tcp_retries2(netns: str, retries: int) -> None:
    """How many retransmission timeouts a TCP socket (an MPTCP subflow) survives; with a capped
    RTO the default 15 lasts seconds, so a path absent for a minute loses its subflow."""
    run_command(["sysctl", "-q", "-w", f"net.ipv4.tcp_retries2={retries}"], netns=netns,
                what=f"TCP retransmission limit in {netns}")


def set_buffer_max(netns: str, max_bytes: int) -> None:
    """Let TCP autotuning grow socket buffers up to `max_bytes` (per namespace since Linux
    4.15): the receive window, and so goodput on a long fat path, is bounded by tcp_rmem's
    maximum, and the sender's unacknowledged data by tcp_wmem's."""
    run_command(["sysctl", "-q", "-w", f"net.ipv4.tcp_rmem=4096 131072 {max_bytes}",
                 f"net.ipv4.tcp_wmem=4096 16384 {max_bytes}"], netns=netns,
                what=f"TCP buffer limits in {netns}")


def set_receive_buffer_max(netns: str, max_bytes: int) -> None:
    """Bound the receive buffer autotuning may grow to (tcp_rmem max) in the receiver's
    namespace only: an MPTCP receiver's window is shared by its subflows, so a bound small
    enough makes one stalled subflow's hole hold back all of them."""
    default = min(131072, max_bytes)
    run_command(["sysctl", "-q", "-w", f"net.ipv4.tcp_rmem=4096 {default} {max_bytes}"], netns=netns,
                what=f"TCP receive buffer limit in {netns}")


def set_send_buffer(netns: str, size: int) -> None:
    """Start every socket of the sender's namespace with a `size`-byte send buffer (tcp_wmem
    default and max): an MPTCP sender keeps data sent on a clean subflow until it is
    acknowledged at the data level, which a hole on a lossy subflow delays, and autotuning
    sizes the buffer from the congestion window alone."""
    run_command(["sysctl", "-q", "-w", f"net.ipv4.tcp_wmem=4096 {size} {size}"], netns=netns,
                what=f"TCP send buffer in {netns}")
