"""Why a live test cannot run on this machine, or None: the one check the live suites share."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

RUNNER_TOOLS = ("ip", "nft", "ethtool", "mnexec")  # what `testbed run` needs


def live_problem(tools: tuple[str, ...] = RUNNER_TOOLS, *, mptcp: bool = True) -> str | None:
    """Root, each of `tools` on PATH and (unless `mptcp` is False) a kernel with MPTCP."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in tools:
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if mptcp and not Path("/proc/sys/net/mptcp/enabled").exists():
        return "kernel without MPTCP"
    return None
