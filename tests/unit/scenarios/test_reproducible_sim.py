"""`testbed stack sim` replays exactly from its seed (issue 11 point 6).

Keys, nonces, ISNs, ephemeral ports, losses and the payload all come from streams derived
from `--seed`, so two runs with one seed write byte-identical captures, and another seed
writes different ones (different ISNs and keys at the very least).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from testbed.sim.cli import main

LOSSY_PATHS = ["--path", "rate=20,delay=10,loss=1%", "--path", "rate=10,delay=30,loss=1%"]


def _captures(directory: Path, seed: int) -> dict[str, bytes]:
    argv = [*LOSSY_PATHS, "--size", "100k", "--seed", str(seed), "--pcap", str(directory),
            "--indent", "0"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    captures = {path.name: path.read_bytes() for path in sorted(directory.glob("*.pcap"))}
    assert captures and all(len(data) > 24 for data in captures.values())  # beyond the header
    return captures


def test_same_seed_writes_identical_pcaps_and_another_seed_different_ones(
        tmp_path: Path) -> None:
    first = _captures(tmp_path / "first", 7)
    second = _captures(tmp_path / "second", 7)
    other = _captures(tmp_path / "other", 8)
    assert first == second
    assert set(other) == set(first)
    assert all(other[name] != first[name] for name in first)
