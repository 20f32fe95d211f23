"""Fixtures of the remote tests: a fresh two-sshd lab per test, always torn down."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.remote.lab import Lab


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("the remote lab needs root (network namespaces, sshd)")
    built = Lab(tmp_path)
    try:
        yield built.start()
    finally:
        built.close()
