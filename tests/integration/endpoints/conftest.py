"""Fixtures for endpoint tests that need root, namespaces and the kernel's MPTCP."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .netns import TwoPathNet


def _kernel_mptcp_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    if not Path("/proc/sys/net/mptcp/enabled").exists():
        return "kernel without MPTCP"
    return None


@pytest.fixture
def two_path_net() -> Iterator[TwoPathNet]:
    """A fresh client/server namespace pair with two paths; always torn down."""
    reason = _kernel_mptcp_missing()
    if reason is not None:
        pytest.skip(reason)
    net = TwoPathNet(tag=f"{os.getpid() % 10000:04d}")
    try:
        net.build()
        yield net
    finally:
        net.close()
