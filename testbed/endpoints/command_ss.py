"""The kernel's view of a connection the testbed does not own: `ss` in the endpoint's namespace.

A command endpoint (testbed.endpoints.command_endpoint) runs someone else's program, so there
is no socket to getsockopt. What the kernel knows is still there: `ss -tinM` lists every TCP
socket on the transfer's port with its tcp_info (bytes_sent, bytes_acked, bytes_received,
bytes_retrans, rtt) and whether it is an MPTCP subflow (`tcp-ulp-mptcp`), and the MPTCP
socket with its mptcp_info (subflows, fallback). `parse_ss` turns that text into the same
`Observation` the kernel endpoint's sampler records, so the same tracker keeps per-subflow
totals. A program on its own stack (the bundled Python stack through the contract) has no
kernel socket: the view is then empty and the report says so.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from testbed.endpoints.kernel_info import (
    MPTCP_INFO_FLAG_FALLBACK,
    MPTCP_INFO_FLAG_REMOTE_KEY_RECEIVED,
    MptcpInfo,
    SubflowSnapshot,
    TcpCounters,
)
from testbed.endpoints.sampler import Observation, SubflowTracker, TimeseriesWriter

_HEADER = re.compile(r"^(?P<netid>tcp|mptcp)\s+(?P<state>\S+)\s+\d+\s+\d+\s+(?P<local>\S+)\s+(?P<remote>\S+)")
_NUMBER = re.compile(r"\b(?P<key>[a-z_]+):(?P<value>\d+)\b")
_RTT = re.compile(r"\brtt:(?P<srtt>[\d.]+)/")
_RETRANS = re.compile(r"\bretrans:\d+/(?P<total>\d+)\b")
_ULP = re.compile(r"\btcp-ulp-mptcp flags:(?P<flags>\S*)")
_TCP_STATES = {"ESTAB": 1, "SYN-SENT": 2, "SYN-RECV": 3, "FIN-WAIT-1": 4, "FIN-WAIT-2": 5,
               "TIME-WAIT": 6, "UNCONN": 7, "CLOSE-WAIT": 8, "LAST-ACK": 9, "LISTEN": 10,
               "CLOSING": 11}


@dataclass(frozen=True)
class KernelView:
    """One `ss` sample: the observation plus what only ss tells (MPTCP negotiated per subflow)."""

    observation: Observation
    mptcp_subflows: int  # TCP sockets that are MPTCP subflows with the peer's MP_CAPABLE/MP_JOIN
    tcp_sockets: int
    local: str | None
    remote: str | None


def _entries(text: str) -> list[tuple[dict[str, str], str]]:
    """(header fields, info text) of every socket in `ss -tinMH` output."""
    entries: list[tuple[dict[str, str], str]] = []
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header:
            entries.append((header.groupdict(), ""))
        elif entries and line[:1].isspace():
            fields, info = entries[-1]
            entries[-1] = (fields, f"{info} {line.strip()}")
    return entries


def _tcp_counters(state: str, info: str) -> TcpCounters:
    numbers = {m["key"]: int(m["value"]) for m in _NUMBER.finditer(info)}
    rtt = _RTT.search(info)
    retrans = _RETRANS.search(info)
    return TcpCounters(
        state=_TCP_STATES.get(state, 0),
        bytes_sent=numbers.get("bytes_sent", 0),
        bytes_acked=numbers.get("bytes_acked", 0),  # tcpi_bytes_acked, as the kernel endpoint
        bytes_received=numbers.get("bytes_received", 0),
        bytes_retrans=numbers.get("bytes_retrans", 0),
        total_retrans=int(retrans["total"]) if retrans else 0,
        rtt_us=round(float(rtt["srtt"]) * 1000) if rtt else 0,
        snd_cwnd=numbers.get("cwnd", 0),
    )


def _mptcp_info(info: str) -> MptcpInfo:
    numbers = {m["key"]: int(m["value"]) for m in _NUMBER.finditer(info)}
    words = set(info.split())
    flags = (MPTCP_INFO_FLAG_FALLBACK if "fallback" in words else 0) | (
        MPTCP_INFO_FLAG_REMOTE_KEY_RECEIVED if "remote_key" in words else 0)
    return MptcpInfo(
        subflows=numbers.get("subflows", 0), add_addr_signal=numbers.get("add_addr_signal", 0),
        add_addr_accepted=numbers.get("add_addr_accepted", 0),
        subflows_max=numbers.get("subflows_max", 0), flags=flags, token=0, write_seq=0, snd_una=0,
        rcv_nxt=0, local_addr_used=0, local_addr_max=0, csum_enabled="csum" in words,
        retransmits=numbers.get("retransmits"), bytes_retrans=numbers.get("bytes_retrans"),
        bytes_sent=numbers.get("bytes_sent"), bytes_received=numbers.get("bytes_received"),
        bytes_acked=numbers.get("bytes_acked"), subflows_total=numbers.get("subflows_total"),
    )


def parse_ss(text: str) -> KernelView:
    """The sockets of one `ss -tinMH` listing (already filtered to the transfer's port)."""
    subflows: list[SubflowSnapshot] = []
    mptcp: MptcpInfo | None = None
    mptcp_subflows = 0
    local = remote = None
    for fields, info in _entries(text):
        if fields["state"] == "LISTEN":
            continue
        if fields["netid"] == "mptcp":
            mptcp = _mptcp_info(info)
            local, remote = fields["local"], fields["remote"]
            continue
        subflows.append(SubflowSnapshot(fields["local"], fields["remote"],
                                        _tcp_counters(fields["state"], info)))
        ulp = _ULP.search(info)
        if ulp and ("M" in ulp["flags"] or "J" in ulp["flags"]):
            mptcp_subflows += 1
    if local is None and subflows:
        local, remote = subflows[0].local, subflows[0].remote
    return KernelView(Observation(mptcp_info=mptcp, subflows=subflows), mptcp_subflows,
                      len(subflows), local, remote)


def ss_command(port: int, listening: bool = False) -> list[str]:
    """`ss` listing the TCP and MPTCP sockets of `port` (either end), with their info."""
    flags = "-tlnMH" if listening else "-tinMH"
    return ["ss", flags, f"( sport = :{port} or dport = :{port} )"]


def read_view(port: int, run: Callable[[list[str]], str] | None = None) -> KernelView:
    return parse_ss((run or _run_ss)(ss_command(port)))


def listening_on(port: int, run: Callable[[list[str]], str] | None = None) -> bool:
    """A kernel socket listens on `port` in this namespace."""
    return any(fields["state"] == "LISTEN"
               for fields, _info in _entries((run or _run_ss)(ss_command(port, listening=True))))


def _run_ss(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


class KernelViewSampler:
    """Samples `ss` every `interval_s` in a thread; keeps per-subflow totals and the CSV."""

    def __init__(self, port: int, interval_s: float, writer: TimeseriesWriter | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.port = port
        self.interval_s = interval_s
        self.writer = writer
        self.clock = clock
        self.tracker = SubflowTracker()
        self.origin = clock()
        self.mptcp_subflows_seen = 0
        self.sockets_seen = 0
        self.local: str | None = None
        self.remote: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ss-sampler", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> None:
        self.origin = self.clock()
        self._thread.start()

    def sample(self) -> None:
        view = read_view(self.port)
        with self._lock:
            if not view.observation.subflows and view.observation.mptcp_info is None:
                return  # nothing (yet, or any more): keep the last totals
            rows = self.tracker.observe(self.clock() - self.origin, view.observation)
            self.mptcp_subflows_seen = max(self.mptcp_subflows_seen, view.mptcp_subflows)
            self.sockets_seen = max(self.sockets_seen, view.tcp_sockets)
            self.local = self.local or view.local
            self.remote = self.remote or view.remote
            if self.writer is not None:
                self.writer.write(rows)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def finish(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.sample()
