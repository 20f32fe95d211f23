"""The run's packet capture: tcpdump on every interface of the client host, stopped only once
it has written every packet it was handed.

tcpdump runs in immediate mode without per-packet flushing (`-U`). Without immediate mode,
libpcap hands over the kernel's ring one block at a time, a partly filled block only after
its 1 s timeout, and SIGTERM drops what was not handed over: a run had to wait for the file to
stay quiet for a second (1.3-1.6 s per matrix cell). In immediate mode tcpdump reads each
packet as it arrives and buffers its writes; it flushes them when it exits. So the drain only
has to wait until tcpdump's own count of captured packets (printed on SIGUSR1) stops moving
once the endpoints are done, usually at the first or second look, 0.1-0.2 s.
Measured on the matrix's python cells (5 runs each, noisy): no goodput cost against `-U`
without immediate mode; immediate mode with `-U` (a write per packet) cost 5-10 %.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from testbed.command import stop_process

CAPTURE_PCAP = "capture.pcap"
CAPTURE_LOG = "capture.log"
# on SIGUSR1 one line ("tcpdump: N packets captured, M packets received by filter, ..."), on
# exit one line per counter
_COUNTS = re.compile(r"(\d+) packets? captured[,\n]\s*(\d+) packets? received by filter[,\n]\s*"
                     r"(\d+) packets? dropped by kernel")


class PopenNode(Protocol):
    def popen(self, node: str, args: list[str], **kwargs: object) -> subprocess.Popen: ...


@dataclass(frozen=True)
class CaptureCounts:
    """tcpdump's last statement of its counters (received counts what the filter matched,
    including the loopback duplicates that libpcap's "any" device skips)."""
    captured: int
    received: int
    dropped_by_kernel: int


def start_capture(net: PopenNode, host: str, work: Path) -> subprocess.Popen:
    """tcpdump on every interface of `host`, headers plus options (snaplen 200), into
    work/capture.pcap; its statements go to work/capture.log."""
    with (work / CAPTURE_LOG).open("wb") as log:
        return net.popen(host, ["tcpdump", "-i", "any", "-s", "200", "--immediate-mode",
                                "-w", str(work / CAPTURE_PCAP), "tcp"],
                         stdout=subprocess.DEVNULL, stderr=log)


def last_counts(log: Path) -> CaptureCounts | None:
    """The newest counter statement in the capture's log, None before the first."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    found = _COUNTS.findall(text)
    if not found:
        return None
    captured, received, dropped = (int(v) for v in found[-1])
    return CaptureCounts(captured, received, dropped)


def _listening(log: Path) -> bool:
    """tcpdump says "listening on" once it captures, after installing its signal handlers."""
    try:
        return b"listening on" in log.read_bytes()
    except OSError:
        return False


def stop_capture(capture: subprocess.Popen, work: Path, *, look_s: float = 0.1,
                 limit_s: float = 5.0) -> CaptureCounts | None:
    """Wait until tcpdump has captured everything it will (its count unchanged between two
    looks), then stop it; it writes its buffered packets as it exits. Returns its final
    counters (None if it printed none, e.g. it had already died)."""
    log = work / CAPTURE_LOG
    deadline = time.monotonic() + limit_s
    previous: int | None = None
    while capture.poll() is None and time.monotonic() < deadline:
        if not _listening(log):  # SIGUSR1 before tcpdump handles it would kill it
            time.sleep(0.02)
            continue
        capture.send_signal(signal.SIGUSR1)
        time.sleep(look_s)
        counts = last_counts(log)
        if counts is not None and counts.captured == previous:
            break
        previous = None if counts is None else counts.captured
    stop_process(capture)
    return last_counts(log)
