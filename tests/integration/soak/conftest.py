"""The soak's live tests need root: namespaces, tc, nft and the kernel's MPTCP."""

from __future__ import annotations

import os

import pytest

if os.geteuid() != 0:
    pytest.skip("soak integration tests need root (namespaces, tc, nft)", allow_module_level=True)
