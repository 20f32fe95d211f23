"""`testbed findings check` on the fastest finding, for real: its reproducer runs through the
normal runner on real namespaces and the Linux kernel, and the status recorded is the
finding's predicate evaluated on the fresh result.json (about 15 s)."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
from pathlib import Path

import pytest

from testbed.cli import main as cli_main
from testbed.findings import ABSENT, FINDINGS_DIR, NOT_TRIGGERED, PRESENT, judge, load_finding
from testbed.result import read_result

pytestmark = pytest.mark.root

FASTEST = "linux-sender-stalls-after-infinite-mapping"  # a 2 s transfer with a 5 s stall timeout


@pytest.fixture(autouse=True)
def _needs_root_and_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    for tool in ("ip", "nft", "ethtool", "mnexec"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    if not Path("/proc/sys/net/mptcp/enabled").exists():
        pytest.skip("kernel without MPTCP")


def test_check_reruns_the_reproducer_and_records_the_predicate_verdict(tmp_path: Path) -> None:
    findings_dir = tmp_path / "findings"
    findings_dir.mkdir()
    shutil.copy(FINDINGS_DIR / f"{FASTEST}.toml", findings_dir)  # the project's status.json stays as is
    out = tmp_path / "runs"
    code = cli_main(["findings", "--findings-dir", str(findings_dir), "check", FASTEST,
                     "--out", str(out)])
    assert code == 0
    status = json.loads((findings_dir / "status.json").read_text())["findings"][FASTEST]
    release, record = next(iter(status.items()))
    assert release == platform.release()
    assert record["status"] in (PRESENT, ABSENT), record
    # the recorded verdict is the predicate on the run's own result.json, nothing else
    document = read_result(out / FASTEST / "result.json")
    finding = load_finding(findings_dir / f"{FASTEST}.toml")
    assert judge(finding, document).status == record["status"]
    assert record["outcome"] == document["connections"][0]["outcome"]
    assert record["integrity"] == document["connections"][0]["integrity"]
    assert cli_main(["findings", "--findings-dir", str(findings_dir), "list"]) == 0


def test_a_matrix_cell_reproducer_runs_that_one_cell(tmp_path: Path) -> None:
    """A finding whose reproducer is a matrix cell (the no-middlebox row here, about 10 s): the
    cell runs through testbed.matrix and the predicate reads its result; with no checksum
    failure to provoke, the stall finding's trigger does not hold: not-triggered."""
    findings_dir = tmp_path / "findings"
    findings_dir.mkdir()
    text = (FINDINGS_DIR / f"{FASTEST}.toml").read_text()
    text = text.replace(f'id = "{FASTEST}"', 'id = "matrix-probe"').replace(
        'spec = "experiments/middleboxes/rewrite_payload_dss_checksum_late.toml"',
        'matrix = "experiments/fallback_matrix.toml"\nrow = "none"\npairing = "kernel-kernel"')
    # a matrix cell cannot be checked across versions: its guest table goes with the spec
    text = re.sub(r"\[reproducer\.guest\]\n(?:[a-z_]+ = .*\n)+", "", text)
    (findings_dir / "matrix-probe.toml").write_text(text)
    out = tmp_path / "runs"
    assert cli_main(["findings", "--findings-dir", str(findings_dir), "check", "--out", str(out)]) == 0
    assert (out / "matrix-probe" / "cells" / "none" / "kernel-kernel" / "result.json").is_file()
    record = json.loads((findings_dir / "status.json").read_text())["findings"]["matrix-probe"]
    assert [r["status"] for r in record.values()] == [NOT_TRIGGERED]


@pytest.mark.slow
def test_check_across_kernels_on_the_host_kernel_records_a_version_row(tmp_path: Path) -> None:
    """`check --kernels host`: the reproducer at the finding's guest rates (2 Mbit/s) on the
    host's kernel, for real (about 25 s); the record is the predicate on that run, with the
    guest rates applied and the kernel named, and the finding file gains its [versions] block.
    The VM kernels run the same code path with VM endpoints (tests/integration/vm cover those)."""
    from testbed.findings import load_finding

    findings_dir = tmp_path / "findings"
    findings_dir.mkdir()
    shutil.copy(FINDINGS_DIR / f"{FASTEST}.toml", findings_dir)
    out = tmp_path / "runs"
    assert cli_main(["findings", "--findings-dir", str(findings_dir), "check", FASTEST,
                     "--kernels", "host", "--out", str(out)]) == 0
    versions = json.loads((findings_dir / "status.json").read_text())["versions"][FASTEST]
    record = versions[platform.release()]
    assert record["host"] and record["where"] == "host" and record["status"] in (PRESENT, ABSENT)
    document = read_result(out / FASTEST / platform.release() / "result.json")
    assert document["spec"]["topology_params"]["rate_mbit"] == 2  # the guest rates, not the spec's 100
    assert document["spec"]["traffic"]["bytes"] == 2000000
    finding = load_finding(findings_dir / f"{FASTEST}.toml")
    assert judge(finding, document).status == record["status"]
    assert finding.versions["summary"].startswith(f"{record['status']} in {record['label']} (host ")
