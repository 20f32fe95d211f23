"""Real-namespace fixtures: a fresh A - bump - C line per test, always removed afterwards."""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testbed.inline.bench_forwarding import bump_command
from testbed.inline.control import InlineControl
from testbed.inline.lab import C_ADDR, LineLab

_MISSING = [tool for tool in ("ip", "ethtool", "iperf3", "ping") if shutil.which(tool) is None]


@pytest.fixture(autouse=True)
def _needs_root_and_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    if _MISSING:
        pytest.skip(f"missing tools: {_MISSING}")


@pytest.fixture
def lab() -> Iterator[LineLab]:
    with LineLab() as line:
        yield line


@dataclass
class Bump:
    process: subprocess.Popen[bytes]
    control: InlineControl
    control_path: Path
    stats_path: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


@pytest.fixture
def start_bump(lab: LineLab, tmp_path: Path) -> Iterator[Any]:
    """start_bump(config=None, mode=None): the inline process in B, ready to forward.

    mode None runs `python -m testbed.inline`; "decode"/"reencode" run the bench's pass-through
    middlebox (every TCP packet decoded, and re-encoded for "reencode").
    """
    count = 0

    def start(config: dict[str, Any] | None = None, mode: str | None = None) -> Bump:
        nonlocal count
        count += 1
        control = tmp_path / f"control{count}.sock"
        stats = tmp_path / f"stats{count}.json"
        log = tmp_path / f"inline{count}.log"
        if mode is None:
            command = [sys.executable, "-m", "testbed.inline", "--left", lab.left,
                       "--right", lab.right, "--control", str(control), "--stats-out", str(stats)]
            if config is not None:
                config_path = tmp_path / f"config{count}.json"
                config_path.write_text(json.dumps(config))
                command += ["--config", str(config_path)]
        else:
            command = bump_command(mode, lab, str(control), str(stats))
        with log.open("wb") as log_file:
            process = lab.spawn(lab.b, command, stderr=log_file)
        bump = Bump(process, InlineControl(str(control)), control, stats, log)
        try:
            bump.control.wait_ready(timeout_s=10)
        except Exception:
            pytest.fail(f"inline process did not start: {bump.log()}")
        return bump

    yield start  # LineLab.close ends the processes


PING_LINE = re.compile(r"^(?:\[(?P<ts>[\d.]+)\] )?.*icmp_seq=(?P<seq>\d+) .*time=(?P<rtt>[\d.]+) ms")


@dataclass
class PingResult:
    transmitted: int
    received: int
    rtts_ms: list[float]
    replies: list[tuple[float, int, float]]  # (receive unix time, seq, rtt ms) with -D

    @property
    def median(self) -> float:
        return statistics.median(self.rtts_ms)

    @property
    def p95(self) -> float:
        ordered = sorted(self.rtts_ms)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def parse_ping(output: str) -> PingResult:
    replies = []
    for line in output.splitlines():
        match = PING_LINE.match(line)
        if match:
            replies.append((float(match["ts"] or 0.0), int(match["seq"]), float(match["rtt"])))
    summary = re.search(r"(\d+) packets transmitted, (\d+) received", output)
    assert summary, f"no ping summary in: {output[-500:]}"
    return PingResult(int(summary[1]), int(summary[2]), [r[2] for r in replies], replies)


def ping(lab: LineLab, count: int, interval_s: float = 0.01, timestamps: bool = False,
         timeout_s: float = 60.0) -> PingResult:
    command = ["ping", "-n", "-c", str(count), "-i", str(interval_s), "-W", "2"]
    if timestamps:
        command.append("-D")
    return parse_ping(lab.sh(lab.a, *command, C_ADDR, timeout_s=timeout_s))


def warm_up_arp(lab: LineLab) -> None:
    """Resolve C's MAC first: the ARP exchange also crosses the delay and would add one RTT."""
    lab.sh(lab.a, "ping", "-n", "-c", "1", "-W", "2", C_ADDR)
