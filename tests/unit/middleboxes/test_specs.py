"""The spec fragments in experiments/middleboxes load, fit their topology and build their boxes."""

from __future__ import annotations

from pathlib import Path

import pytest

from middleboxes.registry import MIDDLEBOXES
from testbed.spec import check_against_topology, load_spec
from topologies import build_topology

SPEC_DIR = Path(__file__).resolve().parents[3] / "experiments" / "middleboxes"
SPECS = sorted(SPEC_DIR.glob("*.toml"))


def test_spec_directory_is_populated() -> None:
    assert len(SPECS) >= len(MIDDLEBOXES)


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_is_valid_for_its_topology(path: Path) -> None:
    spec = load_spec(path)
    check_against_topology(spec, build_topology(spec.topology, spec.topology_params))
    assert spec.middleboxes, "a middlebox spec without middleboxes"
    assert "outcome" in spec.expect
    assert spec.description.strip()


def test_every_middlebox_type_has_a_spec() -> None:
    used = {box.type for path in SPECS for box in load_spec(path).middleboxes}
    assert set(MIDDLEBOXES) <= used, sorted(set(MIDDLEBOXES) - used)
