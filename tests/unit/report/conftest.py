"""Fixture result files (trimmed from real runs on the development machine: kernel MPTCP over
two_path) and helpers that copy them, so a test may edit its copy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A two-subflow MPTCP run with one timeline event (loss on link a at 0.5 s)."""
    return Path(shutil.copytree(FIXTURES / "run_mptcp", tmp_path / "run_mptcp"))


@pytest.fixture
def rejected_dir(tmp_path: Path) -> Path:
    """MP_JOIN stripped on path B (subflow-rejected), with the first 20 frames of its capture."""
    return Path(shutil.copytree(FIXTURES / "run_rejected", tmp_path / "run_rejected"))


@pytest.fixture
def matrix_dir(tmp_path: Path) -> Path:
    """A 2 x 2 matrix: two cells as expected, one error, one differing from its expectation."""
    return Path(shutil.copytree(FIXTURES / "matrix", tmp_path / "matrix"))
