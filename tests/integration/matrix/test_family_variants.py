"""`testbed matrix --family ipv6|dual` for real: two rows of the CI matrix per variant, kernel
MPTCP at both ends, the boxes acting on IPv6 packets; the outcome classes are IPv4's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow]
if os.geteuid() != 0:
    pytest.skip("matrix integration tests need root (namespaces, tc, nft)", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[3]
CI_SPEC = ROOT / "experiments" / "fallback_matrix_ci.toml"


@pytest.mark.parametrize("family", ["ipv6", "dual"])
def test_family_variant_rows_keep_their_ipv4_outcomes(tmp_path: Path, family: str) -> None:
    out = tmp_path / family
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "matrix", str(CI_SPEC), "--out", str(out),
                           "--family", family, "--rows", "none,strip_mp_join"],
                          capture_output=True, text=True, timeout=150, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads((out / "matrix.json").read_text())
    assert doc["name"] == f"fallback_matrix_ci-{family}"
    assert {c["row"]: (c["outcome"], c["as_expected"]) for c in doc["cells"]} == {
        "none": ("mptcp", True), "strip_mp_join": ("subflow-rejected", True)}
    families = {}
    for row in ("none", "strip_mp_join"):
        result = json.loads((out / "cells" / row / "kernel-kernel" / "result.json").read_text())
        (conn,) = result["connections"]
        families[row] = sorted(s["family"] for s in conn["subflows"] if s["bytes"] > 0)
    # on dual_path the join crosses families (IPv4 first, IPv6 joined) and mb_b's box refuses it
    expected = {"ipv6": {"none": ["IPv6", "IPv6"], "strip_mp_join": ["IPv6"]},
                "dual": {"none": ["IPv4", "IPv6"], "strip_mp_join": ["IPv4"]}}[family]
    assert families == expected
