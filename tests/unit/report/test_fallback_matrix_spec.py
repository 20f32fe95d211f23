"""The shipped fallback matrix stays in step with the middlebox catalogue: every middlebox type
has a row, and a row named after a catalogue spec runs the same boxes and traffic and expects
the outcome measured there for kernel-kernel."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from middleboxes.registry import MIDDLEBOXES
from testbed.matrix import load_matrix_spec
from testbed.spec import load_spec

ROOT = Path(__file__).resolve().parents[3]
CATALOGUE = ROOT / "experiments" / "middleboxes"
MATRIX = load_matrix_spec(ROOT / "experiments" / "fallback_matrix.toml")


# The IPv6 translators act on IPv6 packets only, and this matrix runs on IPv4 two_path: they
# belong to an IPv6 variant of the matrix (tests/integration/ipv6_boxes runs them live).
IPV6_ONLY_BOXES = {"nptv6", "nat64"}


def test_every_middlebox_type_has_a_row() -> None:
    used = {box["type"] for row in MATRIX.rows for box in row.middleboxes}
    missing = set(MIDDLEBOXES) - IPV6_ONLY_BOXES - used
    assert not missing, f"no row for {sorted(missing)}"


def test_all_four_pairings_and_a_reference_row() -> None:
    assert MATRIX.pairings == ("kernel-kernel", "python-kernel", "kernel-python", "python-python")
    assert MATRIX.rows[0].middleboxes == () and set(MATRIX.rows[0].expect.values()) == {"mptcp"}


@pytest.mark.parametrize("row", [r for r in MATRIX.rows if (CATALOGUE / f"{r.name}.toml").exists()],
                         ids=lambda r: r.name)
def test_row_matches_its_catalogue_spec(row) -> None:
    catalogue = load_spec(CATALOGUE / f"{row.name}.toml")
    cell = next(c for c in MATRIX.cells if c.row is row and c.pairing == "kernel-kernel")
    # the catalogue's class is the row's kernel-kernel expectation, or one of its alternatives
    # for a cell measured to vary ("A | B")
    integrity = catalogue.expect.get("integrity")
    measured = catalogue.expect["outcome"] + (f" \u00b7 {integrity}" if integrity else "")
    assert measured in [alternative.strip() for alternative in row.expect["kernel-kernel"].split("|")]
    assert cell.spec.middleboxes == catalogue.middleboxes
    # apart from what the matrix's [outcome_only] table shortens, which the cell declares
    assert cell.spec.traffic == dataclasses.replace(catalogue.traffic, **cell.outcome_only)
    assert cell.spec.mptcp == catalogue.mptcp
    assert cell.spec.topology == catalogue.topology


def test_most_rows_come_from_the_catalogue() -> None:
    from_catalogue = [r for r in MATRIX.rows if (CATALOGUE / f"{r.name}.toml").exists()]
    assert len(from_catalogue) == len(MATRIX.rows) - 1  # all but the reference row
