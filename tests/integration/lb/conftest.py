"""What the live balancer tests need (the bad-input tests need none of it)."""

from __future__ import annotations

import os
import shutil

import pytest


@pytest.fixture
def needs_root_and_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    missing = [tool for tool in ("ip", "nft", "iptables-legacy", "ethtool") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"missing tools: {missing}")
